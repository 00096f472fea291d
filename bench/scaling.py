"""python -m bench.scaling: IsoFLOP curves on a text file, and the compute-optimal exponents they give.

Hoffmann et al. 2022 ("Chinchilla"), approach 2. Fix a compute budget C (training FLOPs); train
models of several sizes N, each on the D tokens the budget pays for, so that every run costs C:
    C = (6 N + 12 L T d) D      6N: forward 2N + backward 4N per token (N = parameters without the
                                position table, wte once); 12 L T d: Q K^T and A V (bench/gpt_train.py)
Plot the final validation loss against log10 N: one valley per budget, an "IsoFLOP curve". A small
model sees many tokens but cannot use them, a large one is undertrained. Fit a parabola per budget,
    loss ~ alpha (log10 N - log10 N_opt)^2 + beta,
its vertex is N_opt(C); the same fit over log10 D gives D_opt(C). Across the budgets, least squares
of log10 N_opt on log10 C gives the exponent a of N_opt ∝ C^a, and the same for D_opt ∝ C^b.
Chinchilla measured a ~ b ~ 0.5: parameters and tokens should grow together. (Since C ~ N D, a + b
is close to 1 by construction; what the study measures is how the budget splits.)

The spread: the standard error of each slope (least squares; with three budgets it has one degree
of freedom, so read it as a rough width) and the exponents of every pair of budgets.

    python -m bench.scaling --output_dir out/scaling                       # ~15 min on one idle core
    python -m bench.scaling --output_dir out/s --budgets 3e11,1e12,3e12 --widths 32,48,64,96,128
    python -m bench.scaling --output_dir out/s --resume --budgets 1e13 --widths 96,128,192,256

--resume keeps the runs already in DIR/runs.jsonl (a stopped study loses at most the run it was
in), trains only the (budget, width) pairs missing, and fits every budget in the file; so budgets
with their own widths, or several processes started side by side, can fill one folder. The fit
needs two budgets (three for a spread); with fewer it says so and stops after the runs.

Each run: a GPT of --n_layer layers and width d (heads of 16), context --block_size, characters of the
text, AdamW through the Trainer (lr --learning_rate, 5% warmup, linear decay to 0 over the run's
steps), batch --batch_size windows; the loss is the mean over --eval_windows windows spread evenly
over the last 10% of the text. Writes runs.jsonl (one line per run), fit.json, isoflop.png.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from bench.gpt_train import flops_per_step
from common.data.language_modeling import read_nonempty_text
from common.errors import ConfigError, run_cli
from common.text.auto import CharTokenizer
from common.train.args import TrainingArguments
from common.train.trainer import Trainer
from minigpt.config import GPTConfig
from minigpt.model import GPT
from minigpt.text_data import TokenBlocks, encode_stream, split_train_validation
from minigpt.train import evenly_spread

CHINCHILLA = 0.5
DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


# ---------------------------------------------------------------- the fit (no training here)


def parabola_vertex(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, bool]:
    """(x at the minimum, y there, whether the fit has one) of a least-squares y = p x^2 + q x + r.

    Without a valley among the points (p <= 0, or a vertex outside the x tried: the sizes sit on
    one side of the optimum, and the parabola would extrapolate) the lowest point tried is
    returned with False: widen --widths.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    p, q, r = np.polyfit(x, y, 2)
    vertex = -q / (2 * p) if p > 0 else math.nan
    if not x.min() <= vertex <= x.max():  # also False for nan
        i = int(np.argmin(y))
        return float(x[i]), float(y[i]), False
    return float(vertex), float(p * vertex ** 2 + q * vertex + r), True


def slope_with_error(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """(slope, its standard error, intercept) of least squares y = slope x + intercept.

    SE = sqrt(sum of squared residuals / (n - 2) / sum (x - mean x)^2); nan with two points.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    residuals = y - (slope * x + intercept)
    dof = len(x) - 2
    error = math.sqrt(float(residuals @ residuals) / dof / float(((x - x.mean()) ** 2).sum())) if dof > 0 else math.nan
    return float(slope), error, float(intercept)


def fit_isoflops(runs: list[dict]) -> dict:
    """Approach 2 over runs of dicts with budget, params, tokens, loss (any number of budgets >= 2).

    Returns per-budget optima (N_opt, D_opt, loss at the vertex, whether it is a real valley) and
    the exponents a (N_opt ∝ C^a) and b (D_opt ∝ C^b) with standard errors and pairwise values.
    """
    budgets = sorted({r["budget"] for r in runs})
    if len(budgets) < 2:
        raise ConfigError(f"the fit needs at least two compute budgets, got {budgets}")
    optima = []
    for c in budgets:
        group = sorted((r for r in runs if r["budget"] == c), key=lambda r: r["params"])
        if len(group) < 3:
            raise ConfigError(f"budget {c:.3g}: {len(group)} runs; a parabola needs at least 3 model sizes")
        losses = [r["loss"] for r in group]
        log_n, loss_n, valley_n = parabola_vertex([math.log10(r["params"]) for r in group], losses)
        log_d, _, valley_d = parabola_vertex([math.log10(r["tokens"]) for r in group], losses)
        optima.append({"budget": c, "params_opt": 10 ** log_n, "tokens_opt": 10 ** log_d, "loss_opt": loss_n,
                       "valley": valley_n and valley_d})
    log_c = [math.log10(o["budget"]) for o in optima]
    result = {"budgets": optima, "chinchilla": CHINCHILLA}
    for key, name in (("params_opt", "a"), ("tokens_opt", "b")):
        log_y = [math.log10(o[key]) for o in optima]
        slope, error, intercept = slope_with_error(log_c, log_y)
        pairs = [(log_y[j] - log_y[i]) / (log_c[j] - log_c[i])
                 for i in range(len(log_c)) for j in range(i + 1, len(log_c))]
        result[name] = {"exponent": slope, "standard_error": error, "intercept": intercept, "pairwise": pairs}
    return result


# ---------------------------------------------------------------- the runs


def gpt_of_width(width: int, n_layer: int, block_size: int, vocab_size: int) -> GPT:
    """A GPT of n_layer blocks, n_embd = width, heads of 16 dimensions (at least one), no dropout."""
    return GPT(GPTConfig(vocab_size=vocab_size, n_layer=n_layer, n_head=max(1, width // 16), n_embd=width,
                         block_size=block_size, dropout=0.0))


SETTINGS = ("n_layer", "block_size", "batch_size", "learning_rate", "eval_windows", "seed")


def settings_of(opts) -> dict:
    """The flags a run's loss depends on besides its budget and width, stored with each run."""
    return {"train_file": Path(opts.train_file).name, **{k: getattr(opts, k) for k in SETTINGS}}


def steps_for(budget: float, width: int, opts, vocab_size: int) -> tuple[int, float]:
    """(optimizer steps that `budget` buys at this width, FLOPs of one step)."""
    step_flops = flops_per_step(gpt_of_width(width, opts.n_layer, opts.block_size, vocab_size), opts.batch_size)
    return int(budget // step_flops), step_flops


def read_runs(path: Path, opts, vocab_size: int) -> list[dict]:
    """The runs of an earlier (stopped or partial) study in runs.jsonl, checked against these flags.

    A run trained with other settings would put a loss of another experiment on the curve, so each
    line must agree: its stored settings (when it has them) and its step count, recomputed here
    from its budget and width at --n_layer, --block_size and --batch_size.
    """
    runs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            run = json.loads(line)
            budget, width, steps = float(run["budget"]), int(run["n_embd"]), int(run["steps"])
            float(run["loss"]), float(run["params"]), float(run["tokens"])
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{where}: not a run of bench.scaling ({error!r}); remove the line or use "
                              f"a new --output_dir") from None
        differ = {k: (v, run["settings"].get(k)) for k, v in settings_of(opts).items()
                  if k in run.get("settings", {}) and run["settings"][k] != v}
        want, _ = steps_for(budget, width, opts, vocab_size)
        if run.get("n_layer") != opts.n_layer or steps != want or differ:
            detail = differ or {"n_layer": (opts.n_layer, run.get("n_layer")), "steps": (want, steps)}
            raise ConfigError(f"{where}: this run was trained with other settings (flag: (now, then) = "
                              f"{detail}); resume with the flags it was run with, or use a new --output_dir")
        runs.append(run)
    return runs


def train_one(budget: float, width: int, opts, tokenizer, train_set, eval_set, output_dir: Path) -> Optional[dict]:
    """Train one model on the tokens `budget` pays for; None when it buys fewer than --min_steps steps."""
    steps, step_flops = steps_for(budget, width, opts, len(tokenizer))
    if steps < opts.min_steps:
        return None
    torch.manual_seed(opts.seed)
    model = gpt_of_width(width, opts.n_layer, opts.block_size, len(tokenizer))
    args = TrainingArguments(output_dir=str(output_dir / f"run-{budget:.3g}-{width}"), overwrite_output_dir=True,
                             max_steps=steps, per_device_train_batch_size=opts.batch_size,
                             per_device_eval_batch_size=64, learning_rate=opts.learning_rate,
                             warmup_ratio=0.05, lr_scheduler_type="linear", adam_beta2=0.99, weight_decay=0.1,
                             save_strategy="no", logging_steps=max(1, steps), disable_tqdm=True, use_cpu=True,
                             seed=opts.seed)
    trainer = Trainer(model, args, train_dataset=train_set, eval_dataset=eval_set, tokenizer=tokenizer)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    loss = trainer.evaluate(eval_set)["eval_loss"]
    c = model.config
    params = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return {"budget": budget, "n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head, "params": params,
            "tokens": steps * opts.batch_size * opts.block_size, "steps": steps, "flops": steps * step_flops,
            "loss": loss, "train_seconds": seconds, "settings": settings_of(opts)}


def plot(runs: list[dict], fit: dict, path: Path) -> Optional[Path]:
    """Two panels: loss against N per budget with its parabola; N_opt and D_opt against C with the fits."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: isoflop.png not drawn (pip install matplotlib)", file=sys.stderr)
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for optimum in fit["budgets"]:
        c = optimum["budget"]
        group = sorted((r for r in runs if r["budget"] == c), key=lambda r: r["params"])
        x = np.log10([r["params"] for r in group])
        (line,) = left.plot(10 ** x, [r["loss"] for r in group], "o", label=f"C = {c:.1e} FLOPs")
        grid = np.linspace(x.min(), x.max(), 50)
        curve = np.polyval(np.polyfit(x, [r["loss"] for r in group], 2), grid)
        left.plot(10 ** grid, curve, "-", color=line.get_color())
        left.plot(optimum["params_opt"], optimum["loss_opt"], "*", color=line.get_color(), markersize=12)
    left.set(xscale="log", xlabel="parameters N (without the position table)", ylabel="validation loss",
             title="IsoFLOP curves")
    left.legend()
    budgets = np.array([o["budget"] for o in fit["budgets"]])
    for key, name, marker in (("params_opt", "a", "o"), ("tokens_opt", "b", "s")):
        e = fit[name]
        (points,) = right.plot(budgets, [o[key] for o in fit["budgets"]], marker,
                               label=f"{'N' if name == 'a' else 'D'}_opt ~ C^{e['exponent']:.2f} "
                                     f"(+- {e['standard_error']:.2f})")
        right.plot(budgets, 10 ** (e["intercept"] + e["exponent"] * np.log10(budgets)), "-",
                   color=points.get_color())
    right.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="N_opt, D_opt",
              title=f"compute-optimal size and tokens (Chinchilla: {CHINCHILLA})")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--output_dir", "--output-dir", required=True, help="Folder for runs.jsonl, fit.json and isoflop.png.")
    add("--train_file", "--train-file", default=str(DEFAULT_TEXT),
        help="Text to train on; the last 10%% is the validation split (default: %(default)s).")
    add("--budgets", default="3e11,1e12,3e12",
        help="Compute budgets C in FLOPs, comma-separated (default: %(default)s).")
    add("--widths", default="32,48,64,96,128,192", help="Model widths d to try at each budget (default: %(default)s).")
    add("--n_layer", "--n-layer", type=int, default=4, help="Blocks of every model (default: %(default)s).")
    add("--block_size", "--block-size", type=int, default=64, help="Context T (default: %(default)s).")
    add("--batch_size", "--batch-size", type=int, default=16, help="Windows per step (default: %(default)s).")
    add("--learning_rate", "--learning-rate", type=float, default=3e-3, help="AdamW peak rate (default: %(default)s).")
    add("--min_steps", "--min-steps", type=int, default=20,
        help="Skip a (budget, width) that buys fewer steps than this (default: %(default)s).")
    add("--eval_windows", "--eval-windows", type=int, default=300,
        help="Validation windows, evenly spread, for each run's loss (default: %(default)s).")
    add("--seed", type=int, default=0)
    add("--resume", action="store_true",
        help="Keep the runs already in OUTPUT_DIR/runs.jsonl, train only the missing ones, fit them all.")
    add("--overwrite_output_dir", "--overwrite-output-dir", action="store_true",
        help="Start a new study in a folder that already holds runs.jsonl (its runs are lost).")
    add("--threads", type=int, default=1, help="torch threads (default: %(default)s).")
    return parser


def parse_numbers(text: str, kind, flag: str) -> list:
    try:
        values = sorted({kind(float(v)) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a comma-separated list of numbers") from None
    if not values or min(values) <= 0:
        raise ConfigError(f"{flag}: give positive numbers, got {text!r}")
    return values


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = build_parser().parse_args(argv)
    budgets = parse_numbers(opts.budgets, float, "--budgets")
    widths = parse_numbers(opts.widths, int, "--widths")
    if len(budgets) < 2 and not opts.resume:
        raise ConfigError(f"--budgets: the exponents need at least two budgets (three or more for a spread), "
                          f"got {budgets}; or add --resume to fill a folder one budget at a time")
    torch.set_num_threads(opts.threads)
    output_dir = Path(opts.output_dir)
    log_path = output_dir / "runs.jsonl"
    if log_path.exists() and not (opts.resume or opts.overwrite_output_dir):
        raise ConfigError(f"{log_path} already holds a study: add --resume to continue it, or "
                          f"--overwrite_output_dir to start again (its runs are lost)")
    output_dir.mkdir(parents=True, exist_ok=True)
    text = read_nonempty_text(opts.train_file, "utf-8", "--train_file")
    train_text, validation_text = split_train_validation(text, 10.0)
    tokenizer = CharTokenizer.from_text(train_text + validation_text)
    train_set = TokenBlocks(encode_stream(tokenizer, train_text, "training text"), opts.block_size, random_offset=True)
    eval_set = evenly_spread(TokenBlocks(encode_stream(tokenizer, validation_text, "validation text"),
                                         opts.block_size, random_offset=False), opts.eval_windows)
    runs = read_runs(log_path, opts, len(tokenizer)) if opts.resume and log_path.exists() else []
    done = {(r["budget"], r["n_embd"]) for r in runs}
    if runs:
        print(f"resuming: {len(runs)} runs already in {log_path}", file=sys.stderr)
    with open(log_path, "a" if opts.resume else "w", encoding="utf-8") as log:
        for budget in budgets:
            for width in widths:
                if (budget, width) in done:
                    continue
                run = train_one(budget, width, opts, tokenizer, train_set, eval_set, output_dir / "runs")
                if run is None:
                    print(f"C={budget:.2e} d={width}: fewer than {opts.min_steps} steps, skipped", file=sys.stderr)
                    continue
                runs.append(run)
                log.write(json.dumps(run) + "\n")
                log.flush()
                print(f"C={budget:.2e} d={width:4d} N={run['params']:>9,} D={run['tokens']:>10,} "
                      f"steps={run['steps']:>6} loss={run['loss']:.4f} ({run['train_seconds']:.0f} s)", file=sys.stderr)
    if opts.resume:  # other processes may have added runs to the folder meanwhile: fit them all
        runs = read_runs(log_path, opts, len(tokenizer))
    sizes = {c: sum(r["budget"] == c for r in runs) for c in sorted({r["budget"] for r in runs})}
    thin = [c for c, k in sizes.items() if k < 3]
    for c in thin:
        print(f"C={c:.2e}: {sizes[c]} runs so far, left out of the fit (a parabola needs 3 sizes)")
    runs = [r for r in runs if r["budget"] not in thin]
    if len(sizes) - len(thin) < 2:
        print(f"{len(sizes) - len(thin)} budget(s) with 3 or more runs in {log_path}: run more into this "
              f"folder with --resume, then the fit follows")
        return 0
    fit = fit_isoflops(runs)
    (output_dir / "fit.json").write_text(json.dumps(fit, indent=2) + "\n", encoding="utf-8")
    picture = plot(runs, fit, output_dir / "isoflop.png")
    for o in fit["budgets"]:
        print(f"C={o['budget']:.2e}: N_opt={o['params_opt']:,.0f} D_opt={o['tokens_opt']:,.0f} "
              f"loss={o['loss_opt']:.4f}{'' if o['valley'] else '  (no valley: the optimum is outside the widths)'}")
    for name, what in (("a", "N_opt"), ("b", "D_opt")):
        e = fit[name]
        print(f"{what} ~ C^{e['exponent']:.3f} (standard error {e['standard_error']:.3f}; pairs "
              f"{', '.join(f'{p:.2f}' for p in e['pairwise'])}); Chinchilla: ~{CHINCHILLA}")
    print(f"runs, fit{' and plot' if picture else ''} written to {output_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main)
