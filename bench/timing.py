"""Timing that survives a busy machine: interleaved repeats, medians, ratios.

Two programs timed one after the other see different machines when other processes come and
go. So every repeat times each candidate once, in a rotated order, for a few steps:

    repeat r:  A A A | B B B | C C C      (r = 0)
               B B B | C C C | A A A      (r = 1) ...

and we report the MEDIAN over repeats of the mean step time of each candidate. A burst of load
lands on one repeat of one candidate and moves its median little; the ratio of two medians
compares the candidates under (nearly) the same load. The spread (max - min) / median over the
repeats is reported too, as the noise of the measurement.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable


@dataclasses.dataclass
class Timing:
    """Per-step seconds of one candidate: one value (the mean over `steps` calls) per repeat."""

    name: str
    per_repeat: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.per_repeat)

    @property
    def spread(self) -> float:
        """(max - min) / median over the repeats: 0.1 means the repeats varied by 10%."""
        return (max(self.per_repeat) - min(self.per_repeat)) / self.median


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int = 5, steps: int = 3,
                warmup: int = 2, clock: Callable[[], float] = time.perf_counter) -> dict[str, Timing]:
    """Time each zero-argument callable `steps` times per repeat, candidates interleaved.

    Every candidate first runs `warmup` untimed calls (lazy initialisation, kernel choice, the
    optimizer's state). Returns {name: Timing} with one mean step time per repeat.
    clock: wall time by default; time.process_time gives the CPU seconds this process used (all its
    threads), which other processes on a shared machine change much less than the wall time.
    """
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            fn = candidates[name]
            start = clock()
            for _ in range(steps):
                fn()
            times[name].append((clock() - start) / steps)
    return {name: Timing(name, times[name]) for name in names}


def per_repeat_ms(timings: dict[str, Timing]) -> dict[str, list[float]]:
    """{name: step time of each repeat in ms}, for the JSON record."""
    return {name: [seconds * 1e3 for seconds in t.per_repeat] for name, t in timings.items()}


def ratio(baseline: Timing, candidate: Timing) -> float:
    """How many times faster the candidate is: median(baseline time) / median(candidate time)."""
    return baseline.median / candidate.median
