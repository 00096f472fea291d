"""Corpus BLEU (Papineni et al. 2002), as sacrebleu computes it by default (13a tokenization,
exponential smoothing, 4-grams, case-sensitive), written out.

    p_n  = sum over sentences of clipped n-gram matches / sum of hypothesis n-grams     n = 1..4
           (clipped: an n-gram counts at most as often as in the reference that has it most often)
    BP   = 1 if c >= r else exp(1 - r / c)       c = hypothesis tokens, r = reference tokens (per
           sentence the reference length closest to the hypothesis, the shorter one on a tie)
    BLEU = 100 * BP * exp(mean_n log p_n)
Smoothing "exp" (sacrebleu's default, from mteval-v13a): the k-th n-gram order with no match at
all gets p_n = 1 / (2^k * hypothesis n-grams) instead of 0, so one empty order does not zero the score.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence, Union

# mteval-v13a's tokenization: punctuation and symbols become their own tokens; a period or comma
# stays inside a number (3.5, 1,000); a dash after a digit is split off.
_13A_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
)


def tokenize_13a(line: str) -> list[str]:
    """The words BLEU counts: XML entities unescaped, then the 13a rules above."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses: Sequence[str], references: Union[Sequence[str], Sequence[Sequence[str]]],
                max_order: int = 4) -> float:
    """BLEU of the hypotheses against one reference each (a list of strings) or several (a list of
    reference streams, each as long as the hypotheses, as sacrebleu takes them). 0..100."""
    streams = [references] if references and isinstance(references[0], str) else list(references)
    if any(len(stream) != len(hypotheses) for stream in streams):
        raise ValueError(f"{len(hypotheses)} hypotheses but reference streams of "
                         f"{[len(s) for s in streams]} sentences; give one reference per hypothesis")
    matches, totals = [0] * max_order, [0] * max_order
    hyp_length = ref_length = 0
    for i, hypothesis in enumerate(hypotheses):
        hyp = tokenize_13a(hypothesis)
        refs = [tokenize_13a(stream[i]) for stream in streams]
        hyp_length += len(hyp)
        ref_length += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]  # closest, shorter on a tie
        for n in range(1, max_order + 1):
            counts = ngrams(hyp, n)
            most_in_a_reference = Counter()
            for r in refs:
                most_in_a_reference |= ngrams(r, n)  # elementwise max
            matches[n - 1] += sum(min(c, most_in_a_reference[g]) for g, c in counts.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if hyp_length == 0:
        return 0.0
    log_precisions, no_match_orders = [], 0
    for n in range(max_order):
        if totals[n] == 0:  # no n-grams of this order at all: sacrebleu gives p_n = 0
            log_precisions.append(-9999999999.0)
        elif matches[n] == 0:
            no_match_orders += 1
            log_precisions.append(math.log(1.0 / (2 ** no_match_orders * totals[n])))
        else:
            log_precisions.append(math.log(matches[n] / totals[n]))
    brevity = 1.0 if hyp_length >= ref_length else math.exp(1 - ref_length / hyp_length)
    return 100.0 * brevity * math.exp(sum(log_precisions) / max_order)
