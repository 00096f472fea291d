"""The numbers of an evaluation: multiple-choice scores from log-likelihoods, and pass@k.

Multiple choice, as lm-evaluation-harness scores it: each choice c_j is a continuation of the
context x, and its score is its log-likelihood under the model,

    acc        picks argmax_j  sum_t log p(c_{j,t} | x, c_{j,<t})               (the sum)
    acc_norm   picks argmax_j  (sum_t log p(c_{j,t} | x, c_{j,<t})) / len(c_j)  (per character of the choice)

The sum favours short choices (every token costs probability); dividing by the choice's length in
characters (not tokens, so tokenizers compare) removes most of that bias.

pass@k (Chen et al. 2021): the probability that at least one of k answers drawn from the model is
right. From n >= k samples of which c are right, the unbiased estimator is

    pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n - c + 1}^{n} (1 - k / i)

(the probability that a random k-subset of the n samples holds no right one, subtracted from 1); the
product form avoids the huge binomials. The naive 1 - (1 - c/n)^k is biased (draws with replacement).
"""
from __future__ import annotations

import math
from typing import Sequence

from common.errors import ConfigError


# BEGIN EXERCISE pass_at_k
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c right: 1 - C(n - c, k) / C(n, k); 1.0 when n - c < k
    (every k-subset holds a right answer)."""
    if n - c < k:
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i  # C(n-c, k) / C(n, k) as a product of c factors
    return 1.0 - fail
# END EXERCISE pass_at_k


def check_pass_at_k(n: int, c: int, k: int) -> None:
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ConfigError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k} "
                          "(draw at least k samples per problem)")


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """The mean over problems of pass@k, counts = [(n, c) per problem]."""
    for n, c in counts:
        check_pass_at_k(n, c, k)
    return sum(pass_at_k(n, c, k) for n, c in counts) / max(len(counts), 1)


def choose(log_likelihoods: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """(argmax of the summed log-likelihoods, argmax of the per-character ones) over the choices."""
    norm = [ll / max(len(text), 1) for ll, text in zip(log_likelihoods, choices)]
    return (max(range(len(choices)), key=lambda j: log_likelihoods[j]),
            max(range(len(choices)), key=lambda j: norm[j]))


def is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
