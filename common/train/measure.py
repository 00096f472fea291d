"""Measuring what a step costs, with torch's profiler: allocated memory and counted FLOPs.

    peak_allocated_bytes(fn): the most bytes that tensors allocated inside fn held at once, above
        what was allocated before fn started (the profiler's [memory] events: +n at each
        allocation, -n at each free, in time order; the peak of their running sum).
    profiled_flops(fn): the floating-point operations torch's profiler counts (with_flops=True) for
        the matrix products of fn: 2 m n k per (m x k) @ (k x n), forward and backward.

Both are what common/train/accounting.py predicts and tests/test_accounting.py compares; the
profiler's first use in a process costs seconds (its start-up), later uses little.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def allocated_bytes(fn: Callable[[], object]) -> tuple[int, int]:
    """(peak, live at the end) of the bytes allocated while fn runs, counted from 0 at its start:
    the running sum of the profiler's [memory] events (+n at an allocation, -n at a free)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, live


def peak_allocated_bytes(fn: Callable[[], object]) -> int:
    """Peak of the bytes allocated (and not yet freed) while fn runs, counted from 0 at its start."""
    return allocated_bytes(fn)[0]


# The matrix products: what 6N + attention counts. The profiler also gives element-wise kernels
# (add, mul) a FLOP count, one per element, which the accounting leaves out (a few percent in a
# tiny model, nothing in a large one).
PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profiled_flops(fn: Callable[[], object], ops: tuple[str, ...] = PRODUCTS) -> int:
    """The FLOPs torch's profiler (with_flops=True) counts for fn's matrix products."""
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        fn()
    return int(sum(e.flops for e in prof.events() if e.flops and e.name in ops))
