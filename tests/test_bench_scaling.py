"""bench.scaling: the IsoFLOP fit (approach 2 of Hoffmann et al. 2022) on losses with known exponents,
and a smoke run of the command on a tiny text.

For L(N, D) = E + A / N^alpha + B / D^beta at C = 6 N D, the optimum is N_opt ~ C^(beta / (alpha + beta))
and D_opt ~ C^(alpha / (alpha + beta)). The fit must recover those; a fit that swapped alpha and
beta, regressed log C on log N (the inverse slope) or took the lowest point tried instead of the
parabola's vertex lands off by more than the tolerance.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from common.errors import ConfigError
from common.text.auto import CharTokenizer

from bench import scaling
from bench.gpt_train import flops_per_step
from bench.scaling import fit_isoflops, gpt_of_width, main, parabola_vertex, slope_with_error

E, A, B = 1.69, 406.4, 410.7  # Chinchilla's fitted loss surface


def synthetic_runs(alpha: float, beta: float, budgets=(1e18, 1e19, 1e20), points: int = 7) -> list[dict]:
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    a = beta / (alpha + beta)
    runs = []
    for c in budgets:
        centre = g * (c / 6) ** a
        shift = 0.07 * (-1) ** int(math.log10(c))  # the grid is not centred on the optimum
        for n in centre * 10 ** (np.linspace(-0.6, 0.6, points) + shift):
            d = c / (6 * n)
            loss = E + A / n ** alpha + B / d ** beta
            runs.append({"budget": c, "params": float(n), "tokens": float(d), "loss": loss})
    return runs


@pytest.mark.parametrize("alpha, beta", [(0.34, 0.28), (0.3, 0.3), (0.2, 0.45)])
def test_fit_recovers_the_known_exponents(alpha, beta):
    fit = fit_isoflops(synthetic_runs(alpha, beta))
    a, b = fit["a"]["exponent"], fit["b"]["exponent"]
    want_a, want_b = beta / (alpha + beta), alpha / (alpha + beta)
    assert abs(a - want_a) < 0.01, f"N_opt ~ C^{a:.4f}, the loss surface gives {want_a:.4f}"
    assert abs(b - want_b) < 0.01, f"D_opt ~ C^{b:.4f}, the loss surface gives {want_b:.4f}"
    assert all(o["valley"] for o in fit["budgets"])
    assert fit["a"]["standard_error"] < 0.01 and len(fit["a"]["pairwise"]) == 3


def test_parabola_vertex_and_slope_error_on_exact_curves():
    x = [0.0, 1.0, 2.0, 3.5]
    vertex, low, valley = parabola_vertex(x, [2 * (v - 1.3) ** 2 + 0.7 for v in x])
    assert valley and abs(vertex - 1.3) < 1e-9 and abs(low - 0.7) < 1e-9, (vertex, low)
    assert parabola_vertex(x, [-v for v in x]) == (3.5, -3.5, False), "no valley: the lowest point tried"
    assert parabola_vertex(x, [(v - 5.0) ** 2 for v in x]) == (3.5, 2.25, False), "a vertex beyond the sizes tried"
    slope, error, intercept = slope_with_error([1, 2, 3], [2.5, 4.0, 5.5])
    assert (round(slope, 12), round(error, 12), round(intercept, 12)) == (1.5, 0.0, 1.0)
    slope, error, _ = slope_with_error([0, 1, 2], [0, 2, 1])  # residuals -1/2, 1, -1/2: SE sqrt(1.5 / 1 / 2)
    assert abs(slope - 0.5) < 1e-12 and abs(error - math.sqrt(0.75)) < 1e-12, (slope, error)


@pytest.mark.slow
def test_the_command_runs_fits_and_writes_runs_fit_and_plot(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 120, encoding="utf-8")
    step = flops_per_step(gpt_of_width(24, 1, 8, 30), 2)
    budgets = f"{8 * step:.6g},{16 * step:.6g}"
    assert main(["--output_dir", str(tmp_path / "out"), "--train_file", str(text), "--budgets", budgets,
                 "--widths", "8,16,24", "--n_layer", "1", "--block_size", "8", "--batch_size", "2",
                 "--min_steps", "3", "--eval_windows", "4"]) == 0
    runs = [json.loads(line) for line in (tmp_path / "out" / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 6 and all(r["flops"] <= r["budget"] and math.isfinite(r["loss"]) for r in runs)
    fit = json.loads((tmp_path / "out" / "fit.json").read_text())
    assert {"a", "b", "budgets"} <= set(fit) and len(fit["budgets"]) == 2
    assert "N_opt ~ C^" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert (tmp_path / "out" / "isoflop.png").stat().st_size > 1000


def test_one_budget_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="at least two budgets"):
        main(["--output_dir", str(tmp_path), "--budgets", "1e9"])


TINY = ["--widths", "8,16,24", "--n_layer", "1", "--block_size", "8", "--batch_size", "2", "--min_steps", "3",
        "--eval_windows", "4"]


def tiny_study(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 120, encoding="utf-8")
    step = flops_per_step(gpt_of_width(24, 1, 8, 30), 2)
    return ["--train_file", str(text)] + TINY, (f"{8 * step:.6g}", f"{16 * step:.6g}")


@pytest.mark.slow
def test_resume_keeps_the_runs_done_trains_the_missing_ones_and_fits_every_budget(tmp_path, monkeypatch, capsys):
    flags, (small, large) = tiny_study(tmp_path)
    out = ["--output_dir", str(tmp_path / "out")]
    assert main(out + flags + ["--budgets", small, "--resume"]) == 0  # one budget: runs, no fit yet
    assert "1 budget(s) with 3 or more runs" in capsys.readouterr().out
    assert not (tmp_path / "out" / "fit.json").exists(), "one budget: no exponent to fit"
    first = (tmp_path / "out" / "runs.jsonl").read_text().splitlines()
    trained = []
    real = scaling.train_one
    monkeypatch.setattr(scaling, "train_one", lambda budget, width, *rest: trained.append((budget, width))
                        or real(budget, width, *rest))
    assert main(out + flags + ["--budgets", f"{small},{large}", "--resume"]) == 0
    assert trained == [(float(large), w) for w in (8, 16, 24)], (
        f"--resume trained {trained}; only the three widths of the new budget {large} were missing")
    lines = (tmp_path / "out" / "runs.jsonl").read_text().splitlines()
    assert lines[:3] == first and len(lines) == 6, "the runs already done must stay as they were, new ones appended"
    assert len(json.loads((tmp_path / "out" / "fit.json").read_text())["budgets"]) == 2
    trained.clear()
    assert main(out + flags + ["--budgets", small, "--resume"]) == 0
    assert trained == [] and "N_opt ~ C^" in capsys.readouterr().out, "a finished study: nothing to train, both fitted"
    with open(tmp_path / "out" / "runs.jsonl", "a", encoding="utf-8") as log:  # a third budget, begun
        opts = scaling.build_parser().parse_args(out + flags)
        vocab = len(CharTokenizer.from_text((tmp_path / "t.txt").read_text(encoding="utf-8")))
        third = 2 * float(large)
        log.write(json.dumps({**json.loads(lines[0]), "budget": third,
                              "steps": scaling.steps_for(third, 8, opts, vocab)[0]}) + "\n")
    monkeypatch.setattr(scaling, "train_one", lambda *args: None)
    assert main(out + flags + ["--budgets", small, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "1 runs so far, left out of the fit" in printed and "N_opt ~ C^" in printed, printed
    # another process, filling the same folder, finishes a run while this one trains: the fit sees it
    extra = {**json.loads(lines[0]), "budget": 3 * float(large)}
    extra["steps"] = scaling.steps_for(extra["budget"], 8, opts, vocab)[0]

    def meanwhile(*args):
        with open(tmp_path / "out" / "runs.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps(extra) + "\n")

    monkeypatch.setattr(scaling, "train_one", meanwhile)
    assert main(out + flags + ["--budgets", f"{5 * float(large):.6g}", "--widths", "8", "--resume"]) == 0
    assert f"C={extra['budget']:.2e}: 1 runs so far" in capsys.readouterr().out, (
        "a run another process wrote while this one trained is missing from the fit's report")


def test_an_existing_study_is_neither_overwritten_nor_resumed_with_other_settings(tmp_path):
    flags, (small, large) = tiny_study(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    vocab = len(CharTokenizer.from_text((tmp_path / "t.txt").read_text(encoding="utf-8")))
    step = scaling.steps_for(float(small), 8, scaling.build_parser().parse_args(["--output_dir", "x"] + flags),
                             vocab)[0]
    run = {"budget": float(small), "n_layer": 1, "n_embd": 8, "params": 1000, "tokens": 16 * step,
           "steps": step, "loss": 3.0, "settings": {"batch_size": 2, "learning_rate": 3e-3}}
    (out / "runs.jsonl").write_text(json.dumps(run) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="already holds a study: add --resume"):
        main(["--output_dir", str(out), "--budgets", f"{small},{large}"] + flags)
    with pytest.raises(ConfigError, match=r"runs.jsonl, line 1: this run was trained with other settings.*batch_size"):
        main(["--output_dir", str(out), "--budgets", small, "--resume"] + flags + ["--batch_size", "4"])
    with pytest.raises(ConfigError, match=r"line 1: .*learning_rate.*\(0.01, 0.003\)"):
        main(["--output_dir", str(out), "--budgets", small, "--resume", "--learning_rate", "1e-2"] + flags)
    (out / "runs.jsonl").write_text("{\"budget\": 1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1: not a run of bench.scaling"):
        main(["--output_dir", str(out), "--budgets", small, "--resume"] + flags)
