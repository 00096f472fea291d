"""minit5: T5 (Raffel et al. 2020), an encoder-decoder pretrained by span corruption, in plain PyTorch.

    config.py     T5Config (transformers' field names)
    tokenizer.py  T5Tokenizer: SentencePiece + <extra_id_N> sentinels at the top of the vocabulary
    data.py       source/target pairs (tables or parallel files), padded batches, batched translation
    metrics.py    corpus BLEU, as sacrebleu computes it
    model.py      relative position buckets, T5 attention (no 1/sqrt(d_k)), the stacks, the LM head
    generate.py   T5's adapter to the one generation loop (common/generation/): the encoder once,
                  a self-attention KV cache, the cross-attention keys and values once per source
    pretrain.py   python -m minit5.pretrain: span corruption on your text
    finetune.py   python -m minit5.finetune: source -> target pairs, scored with corpus BLEU
    translate.py  python -m minit5.translate: a file or stdin through a trained model
"""
from minit5.config import T5Config
from minit5.model import T5EncoderModel, T5ForConditionalGeneration, T5Model
from minit5.tokenizer import T5Tokenizer

__all__ = ["T5Config", "T5EncoderModel", "T5ForConditionalGeneration", "T5Model", "T5Tokenizer"]
