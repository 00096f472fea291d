"""What the numbers were measured on: CPU model, threads, library versions, and the measured
matrix-multiplication peak that model FLOPs utilisation (MFU) is relative to.

Peak: the best rate of C = A B with square n x n matrices, 2 n^3 FLOP each (n^3 multiply-adds),
over a few tries, in float32 and in bfloat16, with the threads torch uses for the benchmarks.
"""
from __future__ import annotations

import os
import platform
import time

import torch


def cpu_model() -> str:
    """The `model name` line of /proc/cpuinfo (Linux), else what platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def matmul_peak(dtype: torch.dtype, n: int = 2048, tries: int = 5) -> float:
    """Best measured FLOP/s of an (n x n) @ (n x n) product: 2 n^3 / seconds."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm-up: kernel selection, page faults
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def describe(quick: bool = False) -> dict:
    """The machine line of the report, with the measured fp32 and bf16 matmul peaks (FLOP/s)."""
    import transformers

    flags = cpu_flags()
    n = 1024 if quick else 2048
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "amx": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "peak_fp32_flops": matmul_peak(torch.float32, n),
        "peak_bf16_flops": matmul_peak(torch.bfloat16, n),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def machine_line(info: dict) -> str:
    bf16 = "AMX" if info["amx"] else ("AVX512-BF16, no AMX" if info["avx512_bf16"] else "no bf16 units")
    return (f"{info['cpu']}, {info['cores']} cores, {info['threads']} torch threads ({bf16}); "
            f"torch {info['torch']}, transformers {info['transformers']}, Python {info['python']}; "
            f"measured matmul peak {info['peak_fp32_flops'] / 1e9:.0f} GFLOP/s fp32, "
            f"{info['peak_bf16_flops'] / 1e9:.0f} GFLOP/s bf16; "
            f"load average {info['load_average']:.1f} at start")
