"""Shared set-up for the numbered tutorials: `import _setup` at the top of each one.

- puts the repository root on sys.path, so `python tutorials/01_attention.py` (and a student copy
  made by `make exercises`) imports its own `common`, `minibert`, `minigpt`;
- QUICK: True when TUTORIAL_QUICK=1 (the tests run every tutorial this way: fewer steps, same code);
- OUT: the folder for plots (TUTORIAL_OUT, default results/tutorials), created on first save;
- save_plot(fig, name): saves a matplotlib figure there and prints the path (matplotlib is optional);
- seed(n): the same random numbers on every run.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

QUICK = os.environ.get("TUTORIAL_QUICK", "") == "1"
OUT = Path(os.environ.get("TUTORIAL_OUT", ROOT / "results" / "tutorials"))


def seed(n: int = 0) -> None:
    """Seed torch (and Python's random) so the printed numbers repeat."""
    import random
    random.seed(n)
    torch.manual_seed(n)


def pyplot():
    """matplotlib.pyplot with a file-only backend, or None (with a note) when it is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: plots are skipped; pip install matplotlib to get them)")
        return None
    return plt


def save_plot(fig, name: str) -> Path:
    """Save `fig` as OUT/name (PNG), close it, print where it went."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    print(f"plot saved: {path}")
    return path
