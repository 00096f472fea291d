"""What every command-line tool shares, in reading order:

    args.py       dataclass fields as flags, booleans, abbreviations refused
    training.py   the training flags, TrainingArguments from them, config overrides, JSON results
    plot_logs.py  python -m common.cli.plot_logs OUTPUT_DIR: loss and learning-rate curves
"""
