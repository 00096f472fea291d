"""Datasets and collators, in reading order:

    language_modeling.py  blocks of text, line-by-line, NSP pairs; padding, MLM and token collators
    labeled.py            the user's labeled files: classification (TSV/CSV/JSONL), CoNLL, SQuAD
    span_corruption.py    T5's span corruption: the random-spans noise mask, sentinels, lengths, collator
    switches.py           training switches: forward arguments a tool adds to every batch, never saved
"""
