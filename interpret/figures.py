"""The figures of docs/results/interpret.md, one subcommand each (markdown tables on stdout, a plot
with --plot):

    python -m interpret.figures induction --model_name_or_path runs/induction
    python -m interpret.figures lens --model_name_or_path runs/shakespeare --text_file tinyshakespeare.txt
    python -m interpret.figures probes --model_name_or_path MINILM --conll_dir ../shared/data/conll2003
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch

from common.errors import UserError, read_text, run_cli
from common.text.auto import load_tokenizer
from interpret import hooks, induction, lens, probes


def grid_table(scores: torch.Tensor, title: str) -> str:
    L, H = scores.shape
    lines = [f"| {title} | " + " | ".join(f"head {h}" for h in range(H)) + " |",
             "|---" * (H + 1) + "|"]
    lines += [f"| layer {l} | " + " | ".join(f"{v:.3f}" for v in scores[l].tolist()) + " |" for l in range(L)]
    return "\n".join(lines)


def run_induction(args) -> None:
    from minigpt import GPT
    model = GPT.from_pretrained(args.model_name_or_path).eval()
    tokenizer = load_tokenizer(args.model_name_or_path)
    low = 1 if args.skip_first_token else 0  # the char tokenizer's id 0 is "\n": no letter
    ids = induction.repeated_tokens(args.batch, args.period, tokenizer.vocab_size, seed=args.seed, low=low)
    logits, cache = hooks.run_with_cache(model, ids)
    pattern = cache.stack("attn.pattern")  # (L, B, H, T, T)
    ind, prev = induction.induction_score(pattern, args.period), induction.previous_token_score(pattern)
    print(f"{args.batch} sequences of {args.period} random tokens, then the same {args.period} again\n")
    print(grid_table(ind, "induction score") + "\n")
    print(grid_table(prev, "previous-token score") + "\n")
    first, repeat = induction.loss_per_half(logits, ids, args.period)
    layer, head = divmod(int(ind.argmax()), ind.size(1))
    print(f"best induction head: layer {layer}, head {head} (score {ind[layer, head]:.3f})\n")
    print("| run | loss on the first copy | loss on the repeat |\n|---|---|---|")
    print(f"| clean | {first:.3f} | {repeat:.3f} |")
    name = f"blocks.{layer}.attn.heads"
    for label, patch in (("zero-ablated", hooks.zero_head(head)), ("mean-ablated", hooks.mean_head(head, cache[name]))):
        ablated, _ = hooks.run_with_hooks(model, ids, patches={name: patch}, cache=False)
        f, r = induction.loss_per_half(ablated, ids, args.period)
        print(f"| layer {layer} head {head} {label} | {f:.3f} | {r:.3f} |")
    for l in range(ind.size(0)):
        ablated, _ = hooks.run_with_hooks(model, ids, patches={f"blocks.{l}.attn.heads": hooks.zero()}, cache=False)
        f, r = induction.loss_per_half(ablated, ids, args.period)
        print(f"| every head of layer {l} zero-ablated | {f:.3f} | {r:.3f} |")
    each = torch.zeros_like(ind)  # the repeat's loss with one head mean-ablated
    for l in range(ind.size(0)):
        name = f"blocks.{l}.attn.heads"
        for h in range(ind.size(1)):
            ablated, _ = hooks.run_with_hooks(model, ids, patches={name: hooks.mean_head(h, cache[name])}, cache=False)
            each[l, h] = induction.loss_per_half(ablated, ids, args.period)[1]
    print("\n" + grid_table(each, "repeat loss, head mean-ablated"))
    if args.plot:
        plot_grids({"induction score": ind, "previous-token score": prev}, args.plot)


def plot_grids(grids: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(grids), figsize=(4 * len(grids), 3))
    for ax, (title, grid) in zip(axes, grids.items()):
        im = ax.imshow(grid.numpy(), vmin=0, vmax=1, cmap="Blues")
        ax.set_title(title), ax.set_xlabel("head"), ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run_lens(args) -> None:
    from minigpt import GPT
    model = GPT.from_pretrained(args.model_name_or_path).eval()
    tokenizer = load_tokenizer(args.model_name_or_path)
    text = read_text(args.text_file)
    ids = tokenizer.encode(text[-args.chars:], add_special_tokens=False)  # the end: the validation split
    T = model.config.block_size
    windows = torch.tensor(ids[:len(ids) // T * T]).view(-1, T)[:args.windows]
    accuracy = torch.stack([lens.lens_accuracy(lens.logit_lens(model, w[None]), w[None]) for w in windows]).mean(0)
    print(f"{len(windows)} windows of {T} tokens from the last {args.chars} characters of {args.text_file}\n")
    print("| layer read | next-token accuracy |\n|---|---|")
    for l, a in enumerate(accuracy.tolist()):
        print(f"| {'embeddings' if l == 0 else f'after block {l - 1}'} | {a:.3f} |")
    layer_acc, layer_names = accuracy.tolist(), ["emb"] + [f"b{l}" for l in range(len(accuracy) - 1)]
    if args.plot:
        plot_curves({"next-token accuracy": layer_acc}, layer_names, args.plot, "logit lens")
    if args.period:
        batch = induction.repeated_tokens(32, args.period, tokenizer.vocab_size, seed=0)
        with torch.no_grad():
            attentions = model(batch, output_attentions=True).attentions
        print("\n" + grid_table(induction.induction_score(attentions, args.period), "induction score"))
        print("\n" + grid_table(induction.previous_token_score(attentions), "previous-token score"))


def plot_curves(curves: dict, xticks: list, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, ys in curves.items():
        ax.plot(range(len(ys)), ys, marker="o", label=label)
    ax.set_xticks(range(len(xticks)), xticks)
    ax.set_title(title), ax.set_xlabel("layer"), ax.legend(fontsize=8), ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run_probes(args) -> None:
    import minibert
    model = minibert.BertModel.from_pretrained(args.model_name_or_path).eval()
    tokenizer = load_tokenizer(args.model_name_or_path)
    folder = Path(args.conll_dir)
    train = probes.read_conll(folder / "train.txt", args.train_sentences)
    test = probes.read_conll(folder / "test.txt", args.test_sentences)
    tr_feats, tr_kept = probes.word_features(model, tokenizer, train)
    te_feats, te_kept = probes.word_features(model, tokenizer, test)

    def column(sentences, kept, name):
        return [x for s, k in zip(sentences, kept) for x in getattr(s, name)[:k]]
    tr_words, te_words = column(train, tr_kept, "words"), column(test, te_kept, "words")
    print(f"{len(train)} training sentences ({len(tr_words)} words), {len(test)} test sentences "
          f"({len(te_words)} words) of CoNLL-2003; probe = linear softmax, {args.probe_steps} L-BFGS iterations\n")
    curves = {}
    for task in ("pos", "ner"):
        rows = probes.probe_layers(tr_feats, te_feats, column(train, tr_kept, task), column(test, te_kept, task),
                                   tr_words, te_words, seed=args.seed, steps=args.probe_steps)
        print(f"| {task.upper()}: layer | accuracy | control accuracy | selectivity |\n|---|---|---|---|")
        for l, (real, control, sel) in enumerate(rows):
            print(f"| {'embeddings' if l == 0 else l} | {real:.3f} | {control:.3f} | {sel:.3f} |")
        print()
        curves[f"{task.upper()} accuracy"] = [r[0] for r in rows]
        curves[f"{task.upper()} selectivity"] = [r[2] for r in rows]
    if args.plot:
        plot_curves(curves, ["emb"] + [str(l) for l in range(1, tr_feats.size(0))], args.plot,
                    "MiniLM probes (CoNLL-2003)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interpret.figures", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="figure", required=True)
    commands = {}
    for name in ("induction", "lens", "probes"):  # every figure reads a model folder and may plot
        commands[name] = sub.add_parser(name)
        commands[name].add_argument("--model_name_or_path", required=True)
        commands[name].add_argument("--plot", help="also save the figure as this PNG")
    p = commands["induction"]
    p.add_argument("--period", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip_first_token", action="store_true", help="draw ids from 1 up (id 0 = newline)")
    p = commands["lens"]
    p.add_argument("--text_file", required=True)
    p.add_argument("--chars", type=int, default=100_000)
    p.add_argument("--windows", type=int, default=64)
    p.add_argument("--period", type=int, default=0, help="also the induction scores on repeats of this period")
    p = commands["probes"]
    p.add_argument("--conll_dir", required=True)
    p.add_argument("--train_sentences", type=int, default=1000)
    p.add_argument("--test_sentences", type=int, default=300)
    p.add_argument("--probe_steps", type=int, default=50, help="L-BFGS iterations per probe")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if getattr(args, "plot", None) and not Path(args.plot).parent.is_dir():
        raise UserError(f"--plot {args.plot}: the folder {Path(args.plot).parent} does not exist")
    {"induction": run_induction, "lens": run_lens, "probes": run_probes}[args.figure](args)
    return 0


if __name__ == "__main__":
    run_cli(main)
