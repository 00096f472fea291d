"""GenerationConfig: every knob of generate, with transformers' names, and the one argument check.

    max_new_tokens        tokens to write at most (a row also stops at eos_token_id)
    do_sample             False: greedy, x = argmax_i z_i; True: x ~ softmax(filter(z / temperature))
    temperature, top_k, top_p   the sampling filters (common/nn/sampling.py)
    num_beams             > 1: beam search (common/generation/beam_search.py); no beam sampling
    length_penalty        beam search: a finished hypothesis scores log P / n^length_penalty
    early_stopping        beam search: True, False or "never" (transformers' values)
    num_return_sequences  beam search: the best that many hypotheses per input, best first
    eos_token_id, pad_token_id   a row ends at eos; rows that ended are filled with pad (default: eos)
    no_repeat_ngram_size  n > 0: a token that would repeat an n-gram already written gets probability 0
    repetition_penalty    r != 1: the logit z of a token already written becomes z / r (z > 0) or z r
    use_cache             False: recompute the whole prefix every step (the textbook path)
    packed_step           ours: False turns the packed fast path off (common/generation/packed.py)
    decoder_start_token_id  encoder-decoders: the first decoder token (T5: pad)
    num_assistant_tokens  speculative decoding: gamma, the tokens the draft proposes per target call
    num_assistant_tokens_schedule  "constant" (gamma fixed) or "heuristic" (transformers': gamma + 2
                          after a round the target accepted whole, gamma - 1 (>= 1) after one it cut)

A family's generate builds one from its keyword arguments (`generate(ids, max_new_tokens=20,
num_beams=4)`) or takes a whole `generation_config=`; unset ids come from the model's config.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import torch

from common.errors import UserError
from common.nn.sampling import check_sampling_arguments


@dataclasses.dataclass
class GenerationConfig:
    max_new_tokens: int = 20
    do_sample: bool = False
    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: Union[bool, str] = False
    num_return_sequences: int = 1
    eos_token_id: Optional[int] = None
    pad_token_id: Optional[int] = None
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    use_cache: bool = True
    packed_step: bool = True
    decoder_start_token_id: Optional[int] = None
    num_assistant_tokens: int = 5
    num_assistant_tokens_schedule: str = "constant"

    def update(self, **kwargs) -> "GenerationConfig":
        """A copy with these fields changed; an unknown name is one UserError listing the known ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise UserError(f"generate got unknown argument(s) {unknown}; GenerationConfig knows {sorted(known)}")
        return dataclasses.replace(self, **kwargs)

    def fill_ids(self, model_config) -> "GenerationConfig":
        """eos, pad and decoder start ids the caller left unset, from the model's config."""
        ids = {name: getattr(model_config, name, None) for name in ("eos_token_id", "pad_token_id",
                                                                    "decoder_start_token_id")
               if getattr(self, name) is None}
        return dataclasses.replace(self, **{k: v for k, v in ids.items() if v is not None})

    @property
    def fill_token_id(self) -> Optional[int]:
        """What a row that has ended is filled with: pad_token_id, else eos_token_id."""
        return self.pad_token_id if self.pad_token_id is not None else self.eos_token_id


def check_generate_arguments(config: GenerationConfig, input_ids: torch.Tensor,
                             attention_mask: Optional[torch.Tensor] = None, streamer=None, generator=None,
                             seed: Optional[int] = None, what: str = "prompt") -> None:
    """The one check of every generate: one UserError line for each wrong argument."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.size(1) == 0:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise UserError(f"input_ids must have shape (batch, {what}_length >= 1), got {shape}; "
                        f"for one {what} pass input_ids[None]")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise UserError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                        f"{tuple(input_ids.shape)}; they must match (1 = token, 0 = padding)")
    c = config
    if not isinstance(c.max_new_tokens, int) or isinstance(c.max_new_tokens, bool) or c.max_new_tokens < 0:
        raise UserError(f"max_new_tokens must be an integer >= 0, got {c.max_new_tokens!r}")
    if not isinstance(c.num_beams, int) or c.num_beams < 1:
        raise UserError(f"num_beams must be an integer >= 1, got {c.num_beams!r}")
    if c.do_sample and c.num_beams > 1:
        raise UserError("sampling with beams is not implemented: pass do_sample=True with num_beams=1, "
                        "or num_beams > 1 without do_sample")
    check_sampling_arguments(c.do_sample, c.temperature, c.top_k, c.top_p, generator, seed)
    if not isinstance(c.num_return_sequences, int) or not 1 <= c.num_return_sequences <= c.num_beams:
        raise UserError(f"num_return_sequences must be in 1..num_beams={c.num_beams}, got {c.num_return_sequences!r}")
    if c.early_stopping not in (True, False, "never"):
        raise UserError(f"early_stopping must be true, false or 'never' (transformers' values), "
                        f"got {c.early_stopping!r}")
    if not isinstance(c.no_repeat_ngram_size, int) or c.no_repeat_ngram_size < 0:
        raise UserError(f"no_repeat_ngram_size must be an integer >= 0 (0 = off), got {c.no_repeat_ngram_size!r}")
    if not (isinstance(c.repetition_penalty, (int, float)) and c.repetition_penalty > 0):
        raise UserError(f"repetition_penalty must be > 0 (1 = off), got {c.repetition_penalty!r}")
    if not isinstance(c.num_assistant_tokens, int) or c.num_assistant_tokens < 1:
        raise UserError(f"num_assistant_tokens must be an integer >= 1, got {c.num_assistant_tokens!r}")
    if c.num_assistant_tokens_schedule not in ("constant", "heuristic"):
        raise UserError(f"num_assistant_tokens_schedule must be 'constant' or 'heuristic', "
                        f"got {c.num_assistant_tokens_schedule!r}")
    if streamer is not None and (c.num_beams > 1 or input_ids.size(0) > 1):
        raise UserError(f"a streamer prints one sequence as it is written: pass one input (got a batch of "
                        f"{input_ids.size(0)}) and num_beams=1 (got {c.num_beams})")
