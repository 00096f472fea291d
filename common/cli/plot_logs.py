"""Plot the curves of a training run: `python -m common.cli.plot_logs OUTPUT_DIR [--out FILE.png]`.

Reads OUTPUT_DIR/log.jsonl (one JSON object per line, written by the Trainer) and draws training
loss and every eval_* loss against the optimizer step, and the learning rate on a second panel.
matplotlib is an optional extra (`pip install matplotlib`); without it the tool says so and exits 2.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

from common.errors import DataError, UserError, read_text, run_cli

LOG_NAME = "log.jsonl"


def read_log(path, encoding: str = "utf-8") -> list[dict]:
    """The records of a log.jsonl; a broken line is an error naming its line number, bytes that
    are not UTF-8 one naming the byte offset."""
    records = []
    for number, line in enumerate(read_text(path, encoding, what="log file").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{number}: not a JSON object ({e.msg}); was the file cut off?") from None
    return records


def curves(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """{metric name: (steps, values)} for every numeric metric that appears in the records."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        for key, value in record.items():
            if key in ("step", "epoch") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            steps, values = out.setdefault(key, ([], []))
            steps.append(record["step"])
            values.append(value)
    return out


def plot(records: list[dict], out_path) -> Path:
    try:
        import matplotlib
        matplotlib.use("Agg")  # write files; never open a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plotting needs matplotlib, which is not installed: pip install matplotlib") from None
    data = curves(records)
    losses = [k for k in data if k == "loss" or (k.startswith("eval_") and k.endswith("loss"))]
    if not losses:
        raise DataError(f"the log has no loss values to plot (keys: {sorted(data)}); did training log any step?")
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                       gridspec_kw={"height_ratios": (3, 1)})
    for key in losses:
        steps, values = data[key]
        ax_loss.plot(steps, values, marker="o" if key != "loss" else None, label=key)
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    if "learning_rate" in data:
        ax_lr.plot(*data["learning_rate"], color="tab:gray")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.cli.plot_logs", allow_abbrev=False,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", help="the Trainer's output_dir (holds log.jsonl)")
    parser.add_argument("--out", default=None, help="PNG file to write (default: OUTPUT_DIR/curves.png)")
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of log.jsonl (the Trainer writes utf-8; default: %(default)s)")
    args = parser.parse_args(argv)
    records = read_log(Path(args.output_dir) / LOG_NAME, args.encoding)
    path = plot(records, args.out or Path(args.output_dir) / "curves.png")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
