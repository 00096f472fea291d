"""Generation in one place: how every decoder of the project writes, in reading order.

    config.py       GenerationConfig (transformers' names) and its one argument check
    processors.py   what changes the scores before a token is chosen: repetition_penalty, no_repeat_ngram_size
    streamers.py    TextStreamer: called with each new piece of text while generate runs
    loop.py         THE generation loop (greedy, sampling, beam search) and the family interface
    beam_search.py  beam search as transformers defines it, one step at a time
    packed.py       the packed fast path's shared parts: its one rule, its one switch, single-query attention
    speculative.py  speculative decoding: a draft proposes, the target checks (assistant_model=)

A model family (minigpt, minit5) takes part through a small adapter (loop.py says what it provides);
its generate module is that adapter and nothing else.
"""
