"""The figures of docs/results/compression.md: distillation, int8 quantization and head pruning of a
fine-tuned SST-2 teacher, and a GPT's validation loss in float32 and int8, side by side in one process.

    python -m bench.compression --teacher out/teacher --students out/student-kd out/student-noteacher \\
        --data_dir ../shared/data/sst2 --gpt out/gpt --text ../shared/data/tinyshakespeare.txt --out out/compression

Accuracy is on the whole SST-2 dev set (872 sentences, at most 64 tokens). Speed: batch 32 of length
64 (dev sentences padded or cut to 64 tokens), forward only, one thread; medians of interleaved
repeats (bench/timing.py), the load average printed beside them. int8 is ours (common/nn/quantization.py:
the textbook path, torch._int_mm, and our int8 weights in torch.ao's fused fbgemm kernel) and torch.ao.quantization.quantize_dynamic on the same
teacher. Pruning: head importance (Michel et al. 2019) from 16 batches of 32 training sentences, then
the least important fraction of heads removed at once, dev accuracy at each fraction (plot).
Writes compression.json and pruning.png to --out.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import os
import sys
import warnings
from pathlib import Path

import torch

from bench.timing import interleaved, per_repeat_ms, ratio
from common.data.labeled import load_classification_file
from common.nn.pruning import head_importance, heads_to_prune
from common.nn.quantization import quantize_model, use_int8_kernel
from common.text.auto import load_tokenizer
from minibert import BertForSequenceClassification

LENGTH, BATCH = 64, 32


def load_loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0] if Path("/proc/loadavg").exists() else "?"


def encode(tokenizer, examples, label2id):
    """[(ids with [CLS] ... [SEP], at most LENGTH: a longer sentence keeps its [SEP]), label id]."""
    rows = [(tokenizer.encode(e.text), label2id[str(e.label)]) for e in examples]
    return [(ids if len(ids) <= LENGTH else ids[:LENGTH - 1] + ids[-1:], y) for ids, y in rows]


def batches(rows, size=64):
    """Length-sorted padded batches (less padding, same predictions): (input_ids, attention_mask, labels)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    for start in range(0, len(order), size):
        chunk = [rows[i] for i in order[start:start + size]]
        T = max(len(ids) for ids, _ in chunk)
        ids = torch.zeros(len(chunk), T, dtype=torch.long)
        mask = torch.zeros(len(chunk), T, dtype=torch.long)
        for i, (x, _) in enumerate(chunk):
            ids[i, :len(x)], mask[i, :len(x)] = torch.tensor(x), 1
        yield ids, mask, torch.tensor([y for _, y in chunk])


@torch.no_grad()
def accuracy(model, rows) -> float:
    model.eval()
    right = 0
    for ids, mask, labels in batches(rows):
        right += int((model(ids, attention_mask=mask).logits.argmax(-1) == labels).sum())
    return right / len(rows)


def timing_batch(rows):
    """BATCH dev sentences padded (with [PAD], masked) or cut to exactly LENGTH tokens."""
    ids = torch.zeros(BATCH, LENGTH, dtype=torch.long)
    mask = torch.zeros(BATCH, LENGTH, dtype=torch.long)
    for i, (x, _) in enumerate(rows[:BATCH]):
        ids[i, :len(x)], mask[i, :len(x)] = torch.tensor(x), 1
    mask[:, :] = 1  # every position counted: the cost of length 64, not of the sentence
    return ids, mask


def state_bytes(model) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def torch_ao_int8(model):
    import torch.ao.quantization as ao

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ao.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def bert_figures(opts, record):
    folder = Path(opts.teacher)
    tokenizer = load_tokenizer(folder)
    teacher = BertForSequenceClassification.from_pretrained(folder)
    label2id = {str(v): int(k) for k, v in teacher.config.id2label.items()}
    dev = encode(tokenizer, load_classification_file(Path(opts.data_dir) / "dev.tsv"), label2id)
    train = encode(tokenizer, load_classification_file(Path(opts.data_dir) / "train.tsv")[:16 * BATCH], label2id)
    models = {"teacher fp32": teacher}
    for path in opts.students:
        models[f"student {Path(path).name}"] = BertForSequenceClassification.from_pretrained(path)
    out = Path(opts.out)
    if "int8" in opts.parts:
        add_int8_models(teacher, models, record, out)
    record["accuracy"] = {}
    for name, model in models.items():
        if name == "teacher int8 (ours, textbook)":
            continue  # the same numbers as int_mm (tests/test_quantization.py); time only
        record["accuracy"][name] = accuracy(model, dev)
        print(f"{name}: dev accuracy {record['accuracy'][name]:.4f} (load {load_loadavg()})", flush=True)
    ids, mask = timing_batch(dev)
    record["load_before_timing"] = load_loadavg()
    with torch.no_grad():
        timings = interleaved({name: (lambda m=m: m(ids, attention_mask=mask)) for name, m in models.items()},
                              repeats=opts.repeats, steps=2, warmup=1)
    record["load_after_timing"] = load_loadavg()
    record["forward_ms_per_repeat"] = per_repeat_ms(timings)
    base = timings["teacher fp32"]
    record["speedup_vs_teacher_fp32"] = {name: ratio(base, t) for name, t in timings.items()}
    for name, t in timings.items():
        print(f"{name}: {t.median * 1e3:.1f} ms per batch (spread {t.spread:.2f}), {ratio(base, t):.2f}x", flush=True)
    if "pruning" in opts.parts:
        pruning(teacher, train, dev, record, out)


def add_int8_models(teacher, models, record, out):
    ours = copy.deepcopy(teacher)
    record["int8_config"] = quantize_model(ours, ["classifier"])
    ours.config.extra["quantization_config"] = record["int8_config"]
    use_int8_kernel(ours)
    models["teacher int8 (ours, int_mm)"] = ours
    textbook = copy.deepcopy(ours)
    use_int8_kernel(textbook, "textbook")
    models["teacher int8 (ours, textbook)"] = textbook
    fbgemm = copy.deepcopy(textbook)
    use_int8_kernel(fbgemm, "fbgemm")
    models["teacher int8 (ours, fbgemm kernel)"] = fbgemm
    models["teacher int8 (torch.ao quantize_dynamic)"] = torch_ao_int8(teacher)
    ours.save_pretrained(out / "teacher-int8")
    teacher.save_pretrained(out / "teacher-fp32")
    record["size_bytes"] = {"teacher fp32 (model.safetensors)": (out / "teacher-fp32" / "model.safetensors").stat().st_size,
                            "teacher int8 ours (model.safetensors)": (out / "teacher-int8" / "model.safetensors").stat().st_size,
                            "teacher fp32 (torch.save state_dict)": state_bytes(teacher),
                            "teacher int8 torch.ao (torch.save state_dict)": state_bytes(models["teacher int8 (torch.ao quantize_dynamic)"])}


def pruning(teacher, train, dev, record, out):
    def loss_batches():
        for ids, mask, labels in batches(train, BATCH):
            yield dict(input_ids=ids, attention_mask=mask, labels=labels)
    importance = head_importance(teacher, loss_batches())
    record["head_importance"] = importance.tolist()
    total = sum(a.num_heads for a in [layer.attention.self for layer in teacher.bert.encoder.layer])
    curve = []
    for fraction in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        model = copy.deepcopy(teacher)
        plan = heads_to_prune(model, importance, fraction)
        model.prune_heads(plan)
        removed = sum(map(len, plan.values()))
        curve.append({"fraction": removed / total, "heads_removed": removed, "parameters": model.num_parameters(),
                      "accuracy": accuracy(model, dev)})
        print(f"pruned {removed}/{total} heads: dev accuracy {curve[-1]['accuracy']:.4f} (load {load_loadavg()})",
              flush=True)
    record["pruning"] = curve
    full = curve[0]["accuracy"]
    record["heads_removable_within_1_point"] = max(c["heads_removed"] for c in curve if c["accuracy"] >= full - 0.01)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([c["fraction"] for c in curve], [100 * c["accuracy"] for c in curve], marker="o")
    ax.axhline(100 * (full - 0.01), color="grey", linestyle="--", linewidth=0.8, label="1 point below unpruned")
    ax.set_xlabel("fraction of heads removed (least important first)")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title(f"Head pruning of the fine-tuned MiniLM ({total} heads)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pruning.png", dpi=120)


@torch.no_grad()
def gpt_figures(opts, record):
    from minigpt.model import GPT
    from minigpt.text_data import split_train_validation

    model = GPT.from_pretrained(opts.gpt)
    tokenizer = load_tokenizer(opts.gpt)
    _, validation = split_train_validation(Path(opts.text).read_text(encoding="utf-8"), 10.0)
    ids = torch.tensor(tokenizer.encode(validation))
    T = model.config.block_size
    windows = ids[: (len(ids) - 1) // T * T + 1]
    inputs = windows[:-1].view(-1, T)
    labels = inputs  # the model shifts: position t predicts t + 1 within the window
    int8 = copy.deepcopy(model)
    record["gpt_int8_config"] = quantize_model(int8)
    use_int8_kernel(int8)
    candidates = {"gpt fp32": model, "gpt int8 (ours)": int8, "gpt int8 (torch.ao quantize_dynamic)": torch_ao_int8(model)}
    record["gpt_validation_loss"] = {}
    for name, m in candidates.items():
        total, n = 0.0, 0
        for start in range(0, len(inputs), 64):
            x = inputs[start:start + 64]
            total += float(m(x, labels=labels[start:start + 64]).loss) * len(x)
            n += len(x)
        record["gpt_validation_loss"][name] = total / n
        print(f"{name}: tiny shakespeare validation loss {total / n:.4f} ({n} windows of {T})", flush=True)
    record["gpt"] = {"config": {k: getattr(model.config, k) for k in ("n_layer", "n_head", "n_embd", "block_size")},
                     "validation_windows": len(inputs)}


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.compression", description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--students", nargs="*", default=[])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--gpt", default=None)
    parser.add_argument("--text", default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", required=True)
    parser.add_argument("--parts", default="gpt,int8,pruning",
                        help="what to measure besides the teacher and --students: gpt, int8, pruning (comma-separated)")
    opts = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    os.makedirs(opts.out, exist_ok=True)
    record = {"threads": 1, "cpu": os.cpu_count(), "torch": torch.__version__, "load_at_start": load_loadavg()}
    if opts.gpt and "gpt" in opts.parts:
        gpt_figures(opts, record)
    bert_figures(opts, record)
    record["load_at_end"] = load_loadavg()
    Path(opts.out, f"compression-{opts.parts.replace(',', '-') or 'students'}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {opts.out}/compression.json and pruning.png", file=sys.stderr)


if __name__ == "__main__":
    main()
