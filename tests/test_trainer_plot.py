"""`python -m common.cli.plot_logs OUTPUT_DIR` draws the curves of log.jsonl to a PNG."""
from __future__ import annotations

import json
import sys

import pytest

from common.errors import run_cli
from common.cli.plot_logs import curves, main

RECORDS = [{"step": 1, "epoch": 0.1, "loss": 2.0, "learning_rate": 1e-3, "grad_norm": 1.5},
           {"step": 2, "epoch": 0.2, "loss": 1.5, "learning_rate": 9e-4, "grad_norm": 1.1},
           {"step": 2, "epoch": 0.2, "eval_loss": 1.7, "eval_accuracy": 0.4},
           {"step": 2, "epoch": 0.2, "train_loss": 1.75, "stop_reason": "finished"}]


def write_log(folder, records=RECORDS):
    folder.mkdir(exist_ok=True)
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_curves_collect_numeric_metrics_by_step_and_skip_text():
    data = curves(RECORDS)
    assert data["loss"] == ([1, 2], [2.0, 1.5])
    assert data["eval_loss"] == ([2], [1.7])
    assert "stop_reason" not in data


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    folder = write_log(tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(folder)])
    assert exit_info.value.code == 0
    png = (folder / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "the output is not a PNG file"
    assert "curves.png" in capsys.readouterr().out


def test_without_matplotlib_the_tool_says_so_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(write_log(tmp_path / "run"))])
    assert exit_info.value.code == 2
    assert "pip install matplotlib" in capsys.readouterr().err


def test_a_cut_off_log_line_is_an_error_naming_the_line(tmp_path, capsys):
    folder = write_log(tmp_path / "run")
    with open(folder / "log.jsonl", "a") as f:
        f.write('{"step": 3, "lo')
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(folder)])
    assert exit_info.value.code == 2
    assert "log.jsonl:5:" in capsys.readouterr().err
