"""THE generation loop: greedy, sampling and beam search for every decoder of the project.

Each step turns the scores of the next position into a token (common/nn/sampling.py):
    greedy       x_{t+1} = argmax_i z_i
    sampling     x_{t+1} ~ softmax(filter(z / tau))     temperature tau, top-k, top-p
    beam search  keep the num_beams prefixes of highest log P (common/generation/beam_search.py)
after the processors (common/generation/processors.py: repetition_penalty, no_repeat_ngram_size).

The loop owns a token buffer (N, T_0 + max_new_tokens) whose first T_0 columns are the prefix (a
GPT's prompt, left padded; a T5's decoder start token) and writes one column per step. A row ends
at eos_token_id and is filled with pad_token_id afterwards; the loop stops when every row has ended.

A model family takes part through an adapter with three methods (minigpt/generate.py and
minit5/generate.py are the two):

    prefill(tokens (N, T_0)) -> logits (N, V)   the whole prefix through the model, filling its caches;
                                                the scores of the first new token
    step(tokens (N, t)) -> logits (N, V)        the scores of token t + 1, given the t written so far:
                                                the family feeds what its caches have not seen (the
                                                newest token), or everything without caches
    reorder(rows (N,)) -> None                  beam search: row i of every cache (and mask) becomes
                                                old row rows[i]
and one attribute, decode_path: "packed" (common/generation/packed.py), "cache" or "recompute".
Everything a family needs beyond that (a T5's encoder output, a GPT's padding mask and window) it
keeps to itself.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from common.generation.beam_search import BeamSearch
from common.generation.config import GenerationConfig
from common.generation.processors import process
from common.nn.sampling import next_token


@dataclasses.dataclass
class GenerateOutput:
    """generate(..., return_dict_in_generate=True): the tokens and how they were made."""

    sequences: torch.Tensor  # what generate returns otherwise
    decode_path: str  # "packed", "cache" or "recompute": which step ran (common/generation/packed.py)
    target_forwards: int = 0  # calls of the model that score tokens (prefill included)
    draft_tokens: int = 0  # speculative decoding: tokens the draft proposed
    accepted_tokens: int = 0  # ... and how many of them the target kept


class Sampler:
    """Greedy or sampling: one token per row and step; a row that has ended gets the fill token."""

    def __init__(self, tokens: torch.Tensor, length: int, config: GenerationConfig,
                 generator: Optional[torch.Generator]):
        self.tokens, self.length, self.config, self.generator = tokens, length, config, generator
        self.unfinished = torch.ones(tokens.size(0), dtype=torch.bool, device=tokens.device)
        self.done = False

    def step(self, logits: torch.Tensor) -> None:
        c = self.config
        logits = process(logits, self.tokens[:, :self.length], c)
        chosen = next_token(logits, c.do_sample, c.temperature, c.top_k, c.top_p, self.generator)  # (N,)
        if c.eos_token_id is not None:
            chosen = torch.where(self.unfinished, chosen, torch.full_like(chosen, c.fill_token_id))
            self.unfinished &= chosen != c.eos_token_id
            self.done = not bool(self.unfinished.any())
        self.tokens[:, self.length] = chosen
        self.length += 1

    def result(self) -> torch.Tensor:
        return self.tokens[:, :self.length]


def generate_tokens(family, prefix: torch.Tensor, config: GenerationConfig, streamer=None,
                    generator: Optional[torch.Generator] = None, batch_size: Optional[int] = None) -> torch.Tensor:
    """The loop. prefix (N, T_0): with num_beams = K > 1, N = B K rows, each input repeated K times.
    Returns (N, T_0 + n) tokens, n <= max_new_tokens; with beams (B R, T_0 + n), R = num_return_sequences."""
    N, T0 = prefix.shape
    tokens = prefix.new_empty((N, T0 + config.max_new_tokens))  # written in place: no torch.cat per step
    tokens[:, :T0] = prefix
    if config.num_beams > 1:
        strategy = BeamSearch(tokens, T0, batch_size, config)
    else:
        strategy = Sampler(tokens, T0, config, generator)
    if streamer is not None:
        streamer.put(prefix[0])
    for n in range(config.max_new_tokens):
        current = strategy.tokens[:, :strategy.length]
        logits = family.prefill(current) if n == 0 else family.step(current)  # (N, V)
        rows = strategy.step(logits)
        if rows is not None:
            family.reorder(rows)
        if streamer is not None:
            streamer.put(strategy.tokens[0, strategy.length - 1:strategy.length])
        if strategy.done:
            break
    if streamer is not None:
        streamer.end()
    return strategy.result()
