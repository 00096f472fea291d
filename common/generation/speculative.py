"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a small draft model proposes, the
target model checks, and the tokens come out as if the target had written them alone.

One round, with the target's known prefix x_{<=t} and gamma = num_assistant_tokens:
  1. the draft writes gamma tokens one at a time, d_i ~ q_i = q(. | x_{<=t}, d_{<i}) (its KV cache);
  2. the target scores all of them in ONE forward: p_i = p(. | x_{<=t}, d_{<i}) for i = 1 .. gamma + 1;
  3. d_1, d_2, ... are accepted in turn, each with probability min(1, p_i(d_i) / q_i(d_i)); at the
     first rejection the token is drawn instead from the residual norm(max(0, p_i - q_i)); if all
     gamma are accepted, one more comes from p_{gamma+1} for free.
Why it is exact: a token x comes out at step i with probability
    q(x) min(1, p(x)/q(x)) + (1 - sum_y min(q(y), p(y))) max(0, p(x) - q(x)) / sum_y max(0, p(y) - q(y))
  = min(q(x), p(x)) + max(0, p(x) - q(x)) = p(x)
(the two sums are equal: sum_y min(q, p) = 1 - sum_y max(0, p - q)). So every token has the target's
distribution. Greedy is the same rule with one-hot p and q: a draft token is kept iff it is the
target's argmax, and the first one that is not is replaced by the argmax: the target's own greedy output.

Cost: with acceptance rate a (the chance a draft token is kept, independent per token), a round
yields E[tokens] = (1 - a^(gamma + 1)) / (1 - a) tokens per target forward, against 1 without a draft.
The target forward of gamma + 1 tokens costs about one of a single token on a CPU at batch 1 (it reads
the same weights); the draft's gamma steps are the price.

Here for decoder-only families, one sequence (batch 1, as transformers' assisted generation), caches
on; the target's rejected positions are dropped by rewinding its KV cache.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from common.errors import UserError
from common.generation.config import GenerationConfig
from common.nn.sampling import apply_temperature, top_k_filter, top_p_filter


def probabilities(logits: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """The distribution a token is drawn from: softmax(filter(z / tau)) when sampling, one-hot at
    argmax z when greedy. logits (..., V) -> (..., V)."""
    if not config.do_sample:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).to(torch.float32)
    logits = apply_temperature(logits.float(), config.temperature)
    if config.top_k is not None:
        logits = top_k_filter(logits, config.top_k)
    if config.top_p is not None and config.top_p < 1.0:
        logits = top_p_filter(logits, config.top_p)
    return torch.softmax(logits, dim=-1)


# BEGIN EXERCISE speculative_sampling
def accept_draft(p: torch.Tensor, q: torch.Tensor, draft: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> tuple[int, int]:
    """The modified rejection rule. p (g + 1, V): the target's probabilities at the g drafted positions
    and the one after; q (g, V): the draft's at the g positions; draft (g,): the drafted tokens.
    Returns (n, x): the first n drafted tokens are kept, x is the token after them (drawn from the
    residual norm(max(0, p_n - q_n)) at a rejection, from p_g when all g were kept)."""
    for i, token in enumerate(draft.tolist()):
        r = torch.rand((), generator=generator, device=p.device)
        if r * q[i, token] < p[i, token]:  # kept with probability min(1, p_i(d_i) / q_i(d_i))
            continue
        residual = (p[i] - q[i]).clamp_min(0.0)  # where the target wants more than the draft gave
        if not residual.sum() > 0:
            residual = p[i]
        return i, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))
    return len(draft), int(torch.multinomial(p[-1], 1, generator=generator))
# END EXERCISE speculative_sampling


def check_assistant(target, draft, input_ids: torch.Tensor, attention_mask, config: GenerationConfig) -> None:
    """One UserError line for each way a draft cannot serve this target and these arguments."""
    t_vocab, d_vocab = target.config.vocab_size, draft.config.vocab_size
    if t_vocab != d_vocab:
        raise UserError(f"assistant_model has a vocabulary of {d_vocab} tokens, the model {t_vocab}: a draft "
                        "must share the target's tokenizer (train it on the same tokenizer)")
    t_device, d_device = next(target.parameters()).device, next(draft.parameters()).device
    if t_device != d_device:
        raise UserError(f"assistant_model is on {d_device}, the model on {t_device}: move the draft with "
                        f"assistant_model.to('{t_device}')")
    if input_ids.size(0) != 1 or (attention_mask is not None and not bool(attention_mask.all())):
        raise UserError(f"speculative decoding writes one sequence: pass one unpadded prompt (got a batch of "
                        f"{input_ids.size(0)}), or generate without assistant_model")
    if config.num_beams > 1:
        raise UserError("assistant_model with num_beams > 1 is not supported: use greedy or sampling")
    if config.repetition_penalty != 1.0 or config.no_repeat_ngram_size > 0:
        raise UserError("assistant_model with repetition_penalty or no_repeat_ngram_size is not supported; "
                        "generate without assistant_model for those")
    if not config.use_cache:
        raise UserError("speculative decoding rewinds the KV caches: use_cache must be True")
    needed = input_ids.size(1) + config.max_new_tokens
    for name, model in (("model", target), ("assistant_model", draft)):
        if needed > model.config.block_size:
            raise UserError(f"prompt + max_new_tokens = {needed} tokens exceed the {name}'s block_size "
                            f"{model.config.block_size}: speculative decoding keeps the whole sequence in context; "
                            "shorten the prompt or max_new_tokens")


def speculative_generate(target, draft, input_ids: torch.Tensor, attention_mask, config: GenerationConfig,
                         streamer, generator, family_class):
    """generate(input_ids, assistant_model=draft) of a decoder-only family (family_class: its adapter,
    with extend and rewind besides step). Returns GenerateOutput with the counts of target forwards,
    drafted and accepted tokens."""
    from common.generation.loop import GenerateOutput  # the loop's output type (loop.py imports nothing here)
    from common.nn.sampling import generation_mode

    check_assistant(target, draft, input_ids, attention_mask, config)
    T0, eos = input_ids.size(1), config.eos_token_id
    gamma = config.num_assistant_tokens
    forwards = drafted = accepted = 0
    with generation_mode(target), generation_mode(draft):
        tokens = input_ids.new_empty((1, T0 + config.max_new_tokens))
        tokens[:, :T0] = input_ids
        verifier = family_class(target, input_ids, None, dataclasses.replace(config, packed_step=False))  # extend only
        proposer = family_class(draft, input_ids, None, config)
        length = T0
        if streamer is not None:
            streamer.put(input_ids[0])
        while length < T0 + config.max_new_tokens:
            g = min(gamma, T0 + config.max_new_tokens - length - 1)  # the last token comes from the target
            q = []
            for i in range(g):  # 1. the draft proposes g tokens
                q.append(probabilities(proposer.step(tokens[:, :length + i])[0], config))
                tokens[0, length + i] = (torch.multinomial(q[-1], 1, generator=generator)[0] if config.do_sample
                                         else q[-1].argmax())
            p = probabilities(verifier.extend(tokens[:, :length + g], g)[0], config)  # 2. (g + 1, V), one forward
            forwards += 1
            q = torch.stack(q) if g else p[:0]
            n, token = accept_draft(p, q, tokens[0, length:length + g], generator)  # 3.
            drafted, accepted = drafted + g, accepted + n
            tokens[0, length + n] = token
            new = tokens[0, length:length + n + 1]
            if eos is not None and bool((new == eos).any()):
                new = new[:int((new == eos).nonzero()[0]) + 1]
            length += new.numel()
            verifier.rewind(length - 1)  # the target has not seen the token after the kept ones
            proposer.rewind(length - 1)
            if streamer is not None:
                streamer.put(new)
            if eos is not None and int(tokens[0, length - 1]) == eos:
                break
            if config.num_assistant_tokens_schedule == "heuristic":
                gamma = gamma + 2 if n == g else max(1, gamma - 1)
        if streamer is not None:
            streamer.end()
    return GenerateOutput(tokens[:, :length].clone(), "speculative", target_forwards=forwards,
                          draft_tokens=drafted, accepted_tokens=accepted)
