"""The math of the course, in reading order:

    masks.py      True where attention is allowed; padding and causal masks; MLM 80/10/10
    attention.py  softmax(Q K^T / sqrt(d_k) + M) V, multi-head attention, the KV cache
    dropout.py    the one dropout of the project (inverted dropout, off in eval)
    norms.py      RMSNorm: x / sqrt(mean(x^2) + eps) * weight (T5, Llama)
    blocks.py     GELU, feed-forward, encoder block (post-LN), decoder block (pre-LN)
    losses.py     log-softmax, cross-entropy, L_MLM, L_NSP, L_LM, classification
    sampling.py   the next token from the logits: greedy, temperature, top-k, top-p
    lora.py       LoRA: y = x W^T + b + (alpha / r) dropout(x) A^T B^T, W frozen; injection, merging
    dpo.py        DPO: -log sigmoid(beta ((log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))))
    distillation.py  T^2 KL(softmax(z_t / T) || softmax(z_s / T)) + task loss (+ cosine); DistilBERT's layer rule
    quantization.py  absmax int8: s = max|w| / 127 per output row, q = round(w / s); Int8Linear, int8 kernel
    pruning.py    head importance |dL / d gate| and head pruning (MultiHeadAttention.prune_heads)

Nothing here imports from another layer of the project except common/errors.py.
"""
