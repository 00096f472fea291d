"""Datasets and collators, in reading order:

    language_modeling.py  blocks of text, line-by-line, NSP pairs; padding, MLM and token collators
    labeled.py            the user's labeled files: classification (TSV/CSV/JSONL), CoNLL, SQuAD
"""
