"""The demo's results: the summary table (terminal, summary.md, summary.json) and the curves (PNG).

How to read the curves (curves.png, left to right):
    pretraining   training loss L_MLM + L_NSP and the held-out MLM loss falling; on the right
                  axis the held-out NSP accuracy rising from 0.5 (chance) and the MLM accuracy
    fine-tuning   dev accuracy after each epoch: pretrained encoder vs the same model from scratch
    GPT           training and validation loss of next-token prediction (perplexity = exp(loss))
"""
from __future__ import annotations

import json
from pathlib import Path

PLOT_NAMES = ("pretraining", "finetuning", "gpt")


# ---------------------------------------------------------------- table


def _rows(summary: dict) -> list[tuple[str, str, str]]:
    """(stage, time, result) for each stage and the total."""
    stages = summary["stages"]
    p = stages["pretraining"]
    rows = [("data and tokenizers", f"{summary['data_seconds']:.0f} s", summary["data"]),
            ("pretraining BERT (MLM + NSP)", f"{p['seconds']:.0f} s",
             f"held-out MLM loss {p['heldout_mlm_loss_before']:.2f} -> {p['heldout_mlm_loss']:.2f}, "
             f"MLM accuracy {p['heldout_mlm_accuracy_before']:.2f} -> {p['heldout_mlm_accuracy']:.2f}, "
             f"NSP accuracy {p['heldout_nsp_accuracy_before']:.2f} -> {p['heldout_nsp_accuracy']:.2f} "
             f"({p['steps']} steps, {p['num_parameters']:,} parameters)")]
    f = stages["finetuning"]
    if "skipped" in f:
        rows.append(("fine-tuning", "-", "skipped: no labels (see --help)"))
    else:
        gap = f["pretrained_accuracy"] - f["scratch_accuracy"]
        rows.append((f"fine-tuning on {f['n_train']} labels", f"{f['seconds']:.0f} s",
                     f"dev accuracy: pretrained {f['pretrained_accuracy']:.3f}, from scratch "
                     f"{f['scratch_accuracy']:.3f} ({gap:+.3f}), {f['n_dev']} dev sentences"))
    g = stages["gpt"]
    rows.append(("GPT (next-token prediction)", f"{g['seconds']:.0f} s",
                 f"validation loss {g['val_loss']:.3f}, perplexity {g['val_perplexity']:.2f} "
                 f"({g['steps']} steps, {g['num_parameters']:,} parameters)"))
    rows.append(("total", f"{summary['total_seconds']:.0f} s",
                 f"{summary['total_cpu_seconds']:.0f} s of CPU time on {summary['torch_threads']} torch thread(s)"))
    return rows


def _sample_lines(summary: dict) -> list[str]:
    lines = []
    for s in summary["stages"]["gpt"]["samples"]:
        lines += [f"prompt: {s['prompt']}", f"  greedy:  {s['greedy']}", f"  sampled: {s['sampled']}"]
    return lines


def print_summary(summary: dict) -> None:
    rows = _rows(summary)
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    print("\n" + "=" * 80 + "\nsummary\n" + "=" * 80)
    for stage, seconds, result in rows:
        print(f"{stage:<{widths[0]}}  {seconds:>{widths[1]}}  {result}")
    print("\nGPT samples (greedy = likeliest word each step; sampled = temperature 0.8, top-k 20, seeded):")
    print("\n".join(_sample_lines(summary)))
    for note in summary["notes"]:
        print(f"note: {note}")
    if not summary["plots"]:
        print("plots skipped: matplotlib is not installed (pip install matplotlib)")
    print(f"\nresults: {summary['results_dir']}  (summary.md, summary.json"
          + (", " + ", ".join(Path(p).name for p in summary["plots"]) if summary["plots"] else "") + ")")


def write_summary(summary: dict, out: Path) -> None:
    """summary.json (every number, the curves included) and summary.md (the table and samples)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    md = ["# Demo results", "", f"Data: {summary['data']}, seed {summary['seed']}"
          + (" (--quick: tiny sizes, the numbers mean nothing)" if summary["quick"] else ""), "",
          "| stage | time | result |", "| --- | --- | --- |"]
    md += [f"| {stage} | {seconds} | {result} |" for stage, seconds, result in _rows(summary)]
    md += ["", "## GPT samples", "", "Greedy: the likeliest token at each step. Sampled: temperature 0.8, "
           "top-k 20, seeded.", ""]
    for s in summary["stages"]["gpt"]["samples"]:
        md += [f"- prompt `{s['prompt']}`", f"  - greedy: {s['greedy']}", f"  - sampled: {s['sampled']}"]
    if summary["notes"]:
        md += ["", "## Notes", ""] + [f"- {note}" for note in summary["notes"]]
    if summary["plots"]:
        md += ["", "## Curves", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in summary["plots"]]
    (out / "summary.md").write_text("\n".join(md) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- plots


def _xy(points):
    return [p[0] for p in points], [p[1] for p in points]


def _plot_pretraining(ax, stage: dict) -> None:
    curves = stage["curves"]
    ax.plot(*_xy(curves["loss"]), color="tab:blue", label="training loss (MLM + NSP)")
    ax.plot(*_xy(curves["heldout_mlm_loss"]), "o-", color="tab:orange", label="held-out MLM loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("1. BERT pretraining")
    right = ax.twinx()
    right.plot(*_xy(curves["heldout_nsp_accuracy"]), "s--", color="tab:green", label="held-out NSP accuracy")
    right.plot(*_xy(curves["heldout_mlm_accuracy"]), "^--", color="tab:purple", label="held-out MLM accuracy")
    right.set_ylim(0, 1.02)
    right.set_ylabel("accuracy")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8)


def _plot_finetuning(ax, stage: dict) -> None:
    ax.set_title("2. fine-tuning with few labels")
    if "skipped" in stage:
        ax.text(0.5, 0.5, "skipped: no labels", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    ax.plot(*_xy(stage["pretrained_curve"]), "o-", color="tab:red", label="from the pretrained BERT")
    ax.plot(*_xy(stage["scratch_curve"]), "o-", color="tab:gray", label="from scratch (random weights)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"dev accuracy ({stage['n_dev']} sentences)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right", fontsize=8)


def _plot_gpt(ax, stage: dict) -> None:
    ax.plot(*_xy(stage["curves"]["loss"]), color="tab:blue", label="training loss")
    ax.plot(*_xy(stage["curves"]["eval_loss"]), "o-", color="tab:orange", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("next-token loss (nats)")
    ax.set_title("3. GPT")
    ax.legend(loc="upper right", fontsize=8)


PANELS = {"pretraining": _plot_pretraining, "finetuning": _plot_finetuning, "gpt": _plot_gpt}


def save_plots(summary: dict, out: Path) -> list[str]:
    """curves.png (the three stages side by side) and one PNG per stage; [] without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, name in zip(axes, PLOT_NAMES):
        PANELS[name](ax, summary["stages"][name])
        ax.grid(alpha=0.3)
    fig.suptitle(f"make demo - data: {summary['data']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=90)
    plt.close(fig)
    paths.append(str(out / "curves.png"))
    for name in PLOT_NAMES:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        PANELS[name](ax, summary["stages"][name])
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=90)
        plt.close(fig)
        paths.append(str(out / f"{name}.png"))
    return paths
