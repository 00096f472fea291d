"""Tokenizers, in reading order:

    base.py            BaseTokenizer: special tokens, __call__ -> BatchEncoding, save/load
    batch_encoding.py  BatchEncoding: input_ids, attention_mask, token_type_ids, padding
    char.py            one token per character
    bpe.py             GPT-2's byte-level BPE, written out: training, encoding, vocab.json + merges.txt
    wordpiece.py       BERT's WordPiece (greedy longest match, ## continuations)
    sentencepiece.py   SentencePiece (the library), trained on your text
    auto.py            load_tokenizer: the right class for a saved folder
"""
