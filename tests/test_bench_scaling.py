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
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="at least two budgets"):
        main(["--output_dir", str(tmp_path), "--budgets", "1e9"])
