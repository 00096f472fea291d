"""`make demo` (python -m demo): pretrain a BERT, fine-tune it with few labels, train a GPT.

    corpus.py  the generated corpus of short stories and labeled sentences
    inputs.py  the built-in corpus or the user's text, and its tokenizers
    stages.py  the three stages, each a Trainer run
    report.py  the table, summary.md / summary.json and the curves
    main.py    the command line
"""
