"""Run every benchmark and write the table: stdout, results/bench.md and results/bench.json.

    python -m bench.run_all              # the full run (make bench), about 5-10 minutes on 2 cores
    python -m bench.run_all --quick      # tiny sizes, one repeat: a smoke run of a few seconds
    python -m bench.run_all --compile    # also time torch.compile of our GPT (opt-in row)
    python -m bench.run_all --threads 1  # one thread: steadier ratios when other jobs share the CPU
    python -m bench.run_all --render results/bench.json   # print the table of an earlier run

Every row times ours and transformers interleaved in this one process (bench/timing.py) and
reports medians over repeats and their ratio; the spread column is the noise of the repeats.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from bench import bert_pretrain, bf16, generation, gpt_train, machine, peak_memory


def _fmt_size(size: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in size.items())


def _met(value: float, target: float) -> str:
    return "yes" if value >= target else f"no ({value / target:.0%} of target)"


def speed_rows(result: dict, unit: str = "tokens/s") -> list[str]:
    lines = []
    base = result["candidates"]["transformers"]
    for name, c in result["candidates"].items():
        if name == "transformers":
            continue
        opt_in = name != "ours"
        target = "" if opt_in else f"{result['target']:g}x"
        met = "(opt-in)" if opt_in else _met(c["ratio"], result["target"])
        lines.append(f"| {result['row']}{' - ' + name if opt_in else ''} | {base['ms']:.1f} ms "
                     f"({base['tokens_per_s']:,.0f} {unit}, ±{base['spread']:.0%}) | {c['ms']:.1f} ms "
                     f"({c['tokens_per_s']:,.0f} {unit}, ±{c['spread']:.0%}) | **{c['ratio']:.2f}x** "
                     f"| {target} | {met} |")
    return lines


def ceiling_line(gpt: dict) -> list[str]:
    c = gpt.get("ceiling")
    if c is None:  # a bench.json from before the ceiling was measured
        return []
    t = gpt["candidates"]["transformers"]["ms"]
    return [f"- Row 1 ceiling: the step's matrix products alone (same shapes, forward and backward, on "
            f"random tensors) take {c['products_ms']:.1f} ms and AdamW's step {c['adamw_ms']:.1f} ms, so no "
            f"implementation doing these products with this optimizer beats transformers' {t:.1f} ms by more "
            f"than {t:.1f} / {c['products_ms'] + c['adamw_ms']:.1f} = **{c['ratio']:.2f}x** here, even if "
            "everything else (LayerNorm, GELU, softmax, loss, autograd) cost nothing."]


def markdown(results: dict, command: str) -> str:
    m = results["machine"]
    gpt, bert, gen = results["gpt_train"], results["bert_pretrain"], results["generation"]
    out = [
        "# Benchmarks: ours against transformers, side by side",
        "",
        f"Machine: {machine.machine_line(m)}.",
        f"Command: `{command}` ({results['seconds']:.0f} s). Ratio = median transformers time / median "
        "our time, both timed interleaved in one process; ± is the spread (max - min) / median of "
        "the repeats, i.e. the noise. fp32 unless named.",
        "",
        "| row | transformers | ours | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- |",
        *speed_rows(gpt),
        *speed_rows(bert),
        *speed_rows(gen),
        "",
        f"- Row 1 (GPT): {_fmt_size(gpt['size'])}; AdamW (lr 3e-4, weight decay 0.1), same weights "
        f"and batches; the losses before training agree to {gpt['loss_gap']:.1e}. transformers runs "
        "its default attention (sdpa); ours the hand-written softmax(QK^T/sqrt(d_k)+M)V.",
        *ceiling_line(gpt),
        f"- Row 2 (BERT): {_fmt_size(bert['size'])}; MLM (15% selected, 80/10/10) + NSP, dropout 0.1, "
        "ours with mlm_logits_at_masked_only. Loss on the same batch (eval): transformers "
        f"{bert['losses']['transformers']:.6f}, ours masked-only {bert['losses']['ours_masked_only']:.6f}, "
        f"ours all positions {bert['losses']['ours_all_positions']:.6f} "
        f"(largest gap {bert['loss_gap']:.1e}).",
        f"- Row 3 (generation): {_fmt_size(gen['size'])}; greedy, batch 1; transformers "
        "generate(use_cache=True); same tokens from both: "
        f"{'yes' if gen['same_tokens'] else 'NO'}. Opt-in bf16 weights: the first "
        f"{gen.get('bf16_leading_tokens_equal', '?')} of {gen['size']['new_tokens']} greedy tokens equal "
        "the float32 ones.",
    ]
    mem = results["memory"]
    out += ["", "## Peak memory (row 4), each model in a fresh process", "",
            "| model | transformers peak RSS (growth in training) | ours | at most transformers' |",
            "| --- | --- | --- | --- |"]
    for row in ("gpt", "bert"):
        t, o = mem[row]["transformers"], mem[row]["ours"]
        ok = "yes" if o["peak_mib"] <= t["peak_mib"] else "no"
        out.append(f"| {row.upper()} (row {1 if row == 'gpt' else 2}) | {t['peak_mib']:.0f} MiB "
                   f"(+{t['growth_mib']:.0f}) | {o['peak_mib']:.0f} MiB (+{o['growth_mib']:.0f}) | {ok} |")
    out += ["", "Peak RSS = VmHWM after 3 training steps; growth = the rise of that peak during the "
            "steps (activations, gradients, AdamW state). Both processes import torch and transformers."]
    b = results["bf16"]
    out += ["", "## bf16 autocast on the CPU (row 5)", "",
            "| model (larger size) | fp32 step | bf16 autocast step | speed-up |",
            "| --- | --- | --- | --- |"]
    for name, s in b["speedups"].items():
        out.append(f"| {name}: {_fmt_size(s['size'])} | {s['fp32_ms']:.0f} ms (±{s['fp32_spread']:.0%}) | "
                   f"{s['bf16_ms']:.0f} ms (±{s['bf16_spread']:.0%}) | **{s['speedup']:.2f}x** |")
    c = b["curves"]
    out += ["", f"Loss curve, row 1's GPT on {c['steps']} steps of {c.get('data', 'its data')} "
            "(lr 1e-3, same weights and batches; "
            f"mean loss of each {c['window']} steps):", "", "| step | fp32 | bf16 | bf16 - fp32 |",
            "| --- | --- | --- | --- |"]
    points = c["points"]
    shown = points if len(points) <= 10 else points[:: max(1, len(points) // 10)] + [points[-1]]
    seen = set()
    for p in shown:
        if p["step"] in seen:
            continue
        seen.add(p["step"])
        out.append(f"| {p['step']} | {p['fp32']:.4f} | {p['bf16']:.4f} | {p['bf16'] - p['fp32']:+.4f} |")
    if results.get("plot"):
        out += ["", f"![fp32 vs bf16 loss]({results['plot']})"]
    out += ["", "## Model FLOPs utilisation (row 6)", "",
            "FLOPs per step = (6 N + 12 L T d) B T (N = parameters without the position table; 6N "
            "for the weights' forward + backward, 12 L T d for Q K^T and A V), MFU = FLOPs per step / "
            "step time / measured fp32 matmul peak (the larger of the peak at the start, "
            f"{m['peak_fp32_flops'] / 1e9:.0f} GFLOP/s, and a 1024^3 product timed interleaved with the "
            f"steps, {gpt.get('interleaved_peak_flops', 0) / 1e9:.0f} GFLOP/s). "
            f"Row 1: {gpt['flops_per_step'] / 1e9:.2f} GFLOP per step.", "",
            "| GPT row 1 | step | achieved | MFU | target |", "| --- | --- | --- | --- | --- |"]
    for name, c in gpt["candidates"].items():
        achieved = gpt["flops_per_step"] / (c["ms"] / 1e3)
        target = "50%" if name == "ours" else ""
        out.append(f"| {name} | {c['ms']:.1f} ms | {achieved / 1e9:.0f} GFLOP/s | **{c['mfu']:.0%}** "
                   f"| {target} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description="Benchmarks: ours against transformers.")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repeat (smoke run)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of our GPT")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", default="results", help="folder for bench.md, bench.json, the plot")
    parser.add_argument("--curve-steps", type=int, default=300, help="steps of the fp32/bf16 loss curves")
    parser.add_argument("--render", metavar="JSON", help="only rewrite the table from a bench.json")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(Path(args.render).read_text(encoding="utf-8"))
        print(markdown(results, results.get("command", "python -m bench.run_all")))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = {"machine": machine.describe(args.quick)}
    peak = results["machine"]["peak_fp32_flops"]
    print(machine.machine_line(results["machine"]), file=sys.stderr)
    steps = [
        ("gpt_train", lambda: gpt_train.run(args.quick, peak_flops=peak, with_compile=args.compile)),
        ("bert_pretrain", lambda: bert_pretrain.run(args.quick, peak_flops=peak)),
        ("generation", lambda: generation.run(args.quick)),
        ("memory", lambda: {row: {impl: peak_memory.in_subprocess(row, impl, args.quick)
                                  for impl in ("transformers", "ours")} for row in ("gpt", "bert")}),
        ("bf16", lambda: bf16.run(args.quick, curve_steps=args.curve_steps)),
    ]
    for name, run in steps:
        t0 = time.perf_counter()
        results[name] = run()
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if bf16.plot(results["bf16"]["curves"], out / "bf16_loss.png"):
        results["plot"] = "bf16_loss.png"
    results["seconds"] = time.perf_counter() - start
    command = "python -m bench.run_all" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])
                                           if (argv if argv is not None else sys.argv[1:]) else "")
    results["command"] = command
    text = markdown(results, command)
    (out / "bench.md").write_text(text, encoding="utf-8")
    (out / "bench.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
