"""Mutation run over the math layer: each hand-written mutant of common/nn/ must fail a test.

    make mutants                          # or: python -m tests.mutants
    python -m tests.mutants --only gelu   # the mutants whose name holds "gelu"

Three more mutants bend the Trainer's update (the scheduler's order, gradient clipping).

A mutant is one plausible wrong line (a wrong constant, a missing term, an off-by-one, a swapped
argument) written as a source patch: `old` must occur exactly once in `path`, `new` replaces it.
Each one is applied to a temporary copy of the course, the test files named for it run there
(pytest -x: the first failing test is enough), and the file is restored; the run prints, per
mutant, the test that caught it, and exits 1 if any mutant survives. The exercise regions have
their own list, run against their graders: tutorials/mistakes.py.

Adding a mutant: add a Mutant below; when it survives, write the test that catches it (its name
states the property, its message shows the numbers). `caught_by` (optional) names the test that
should catch it, run first to save time; the whole list of test files runs when that one passes.
tests/test_mistakes.py checks, fast, that every mutant's `old` still matches its file.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tutorials import mistakes as engine  # noqa: E402

NN_TESTS = ("tests/test_attention.py", "tests/test_masks.py", "tests/test_blocks.py",
            "tests/test_losses.py", "tests/test_dropout.py", "tests/test_bench.py",
            "tests/test_numerics.py")


@dataclass(frozen=True)
class Mutant:
    path: str
    name: str
    old: str
    new: str
    caught_by: str = ""  # a -k word: the test expected to fail first
    tests: tuple[str, ...] = NN_TESTS


MUTANTS: tuple[Mutant, ...] = (
    # ------------------------------------------------------------ attention.py
    Mutant("common/nn/attention.py", "attention: no 1/sqrt(d_k)",
           "scores = query @ key.transpose(-2, -1) / math.sqrt(d_k)", "scores = query @ key.transpose(-2, -1)",
           "equals_torch_sdpa"),
    Mutant("common/nn/attention.py", "attention: softmax over the queries",
           "weights = torch.softmax(scores, dim=-1)", "weights = torch.softmax(scores, dim=-2)",
           "rows_sum_to_one"),
    Mutant("common/nn/attention.py", "attention: dropout at evaluation too",
           "if training and dropout_p > 0.0:", "if dropout_p > 0.0:", "only_in_training"),
    Mutant("common/nn/attention.py", "sdpa path: fully blocked rows left blocked (NaN)",
           "mask = mask | ~has_key", "mask = mask", "test_multi_head_attention_eager_and_sdpa_give_the_same_numbers"),
    Mutant("common/nn/attention.py", "sdpa path: dropout at evaluation",
           "query, key, value, attn_mask=mask, dropout_p=dropout_p if training else 0.0",
           "query, key, value, attn_mask=mask, dropout_p=dropout_p", "no_dropout_at_evaluation"),
    Mutant("common/nn/attention.py", "split_heads without the transpose (heads read the wrong axis)",
           "return x.view(B, T, num_heads, d // num_heads).transpose(1, 2)",
           "return x.view(B, num_heads, T, d // num_heads)", "test_self_attention_without_positions_is_permutation_equivariant"),
    Mutant("common/nn/attention.py", "merge_heads concatenates in the wrong order",
           "return x.transpose(1, 2).reshape(B, T, H * d_k)", "return x.reshape(B, T, H * d_k)",
           "permutation_equivariant"),
    Mutant("common/nn/attention.py", "multi-head: keys projected from the queries' input in cross-attention",
           "k = split_heads(self.key(source), self.num_kv_heads)  # (B, H_kv, T_k, d_k)",
           "k = split_heads(self.key(hidden_states), self.num_kv_heads)", "cross_attention"),
    Mutant("common/nn/attention.py", "multi-head: W^O skipped",
           "context = self.out_proj(context)", "context = context", "pre_ln_formula"),
    Mutant("common/nn/attention.py", "KV cache: returns only the new keys",
           "return self.key[:, :, :end], self.value[:, :, :end]",
           "return self.key[:, :, start:end], self.value[:, :, start:end]", "kv_cache"),
    # ------------------------------------------------------------ masks.py
    Mutant("common/nn/masks.py", "causal mask off by one", "return (k_pos <= q_pos)[None, None]",
           "return (k_pos < q_pos + 2)[None, None]", "lower_triangle"),
    Mutant("common/nn/masks.py", "causal mask without the cache offset",
           "q_pos = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)",
           "q_pos = torch.arange(q_len, device=device)[:, None]", "fewer_queries"),
    Mutant("common/nn/masks.py", "combine_masks is OR", "out = m if out is None else (out & m)",
           "out = m if out is None else (out | m)", "combine_masks"),
    Mutant("common/nn/masks.py", "combine_masks drops all but the last mask",
           "out = m if out is None else (out & m)", "out = m", "combine_masks"),
    Mutant("common/nn/masks.py", "mask value -inf (NaN in a fully blocked row)",
           "return torch.finfo(dtype).min", "return float(\"-inf\")", "most_negative_finite"),
    Mutant("common/nn/masks.py", "additive mask inverted",
           "return torch.where(mask, zeros, torch.tensor(mask_value(dtype), dtype=dtype, device=mask.device))",
           "return torch.where(~mask, zeros, torch.tensor(mask_value(dtype), dtype=dtype, device=mask.device))",
           "additive_mask"),
    Mutant("common/nn/masks.py", "MLM: 80/10/10 becomes 80/20/0",
           "to_random = selected & (u >= 0.8) & (u < 0.9)", "to_random = selected & (u >= 0.8)", "80_10_10"),
    Mutant("common/nn/masks.py", "MLM: special tokens selectable",
           "probs.masked_fill_(special_tokens_mask.bool(), 0.0)", "probs = probs", "mlm_probability_zero"),
    # ------------------------------------------------------------ blocks.py
    Mutant("common/nn/blocks.py", "gelu: erf(x) instead of erf(x / sqrt 2)",
           "return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))", "return 0.5 * x * (1.0 + torch.erf(x))",
           "gelu_is_x_times"),
    Mutant("common/nn/blocks.py", "gelu_tanh: cubic coefficient 0.0447",
           "return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))",
           "return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.0447 * x.pow(3))))",
           "gelu_tanh_equals"),
    Mutant("common/nn/blocks.py", "relu lets negatives through", "return x.clamp_min(0.0)", "return x.abs()",
           "relu_equals"),
    Mutant("common/nn/blocks.py", "silu: sigmoid without the x", "return x * torch.sigmoid(x)",
           "return torch.sigmoid(x)", "test_fused_activation_kernels_equal_the_formulas"),
    Mutant("common/nn/blocks.py", "GPT-2's gelu_new runs the exact GELU",
           "\"gelu_new\": partial(F.gelu, approximate=\"tanh\"),", "\"gelu_new\": F.gelu,", "fused_activation"),
    Mutant("common/nn/blocks.py", "FFN without its activation",
           "return self.c_proj(self.act(self.c_fc(x)))  # (B, T, d)", "return self.c_proj(self.c_fc(x))",
           "feed_forward_is"),
    Mutant("common/nn/blocks.py", "post-LN sub-layer: residual dropped",
           "return self.LayerNorm(residual + self.dropout(self.dense(x)))",
           "return self.LayerNorm(self.dropout(self.dense(x)))", "post_ln_formula"),
    Mutant("common/nn/blocks.py", "encoder FFN residual from x instead of h",
           "y = self.output(self.intermediate(h), h)", "y = self.output(self.intermediate(h), x)",
           "post_ln_formula"),
    Mutant("common/nn/blocks.py", "decoder MLP reads ln_1",
           "x = x + self.dropout(self.mlp(self.ln_2(x)))", "x = x + self.dropout(self.mlp(self.ln_1(x)))",
           "pre_ln_formula"),
    # ------------------------------------------------------------ losses.py
    Mutant("common/nn/losses.py", "log_softmax: no max subtraction",
           "shifted = logits - m  # (z - m) <= 0: exp() cannot overflow", "shifted = logits", "huge_logits"),
    Mutant("common/nn/losses.py", "cross_entropy helper normaliser without the log",
           "    shifted = logits - m\n    return shifted, torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))",
           "    shifted = logits - m\n    return shifted, torch.exp(shifted).sum(dim=dim, keepdim=True)",
           "cross_entropy_equals_torch"),
    Mutant("common/nn/losses.py", "cross_entropy: -100 counted in the mean",
           "return total / keep.sum().clamp_min(1)", "return total / targets.numel()", "ignored_positions"),
    Mutant("common/nn/losses.py", "cross_entropy: an out-of-range label is not checked",
           "bad = keep & ((targets < 0) | (targets >= num_classes))", "bad = keep & (targets < 0)",
           "label_outside_the_classes"),
    Mutant("common/nn/losses.py", "causal LM loss without the shift",
           "shifted_logits = logits[:, :-1, :].reshape(-1, V)  # (B * (T-1), V)\n"
           "    shifted_labels = labels[:, 1:].reshape(-1)",
           "shifted_logits = logits.reshape(-1, V)\n    shifted_labels = labels.reshape(-1)", "causal_lm_loss"),
    Mutant("common/nn/losses.py", "pretraining loss ignores beta",
           "+ beta * nsp_loss(seq_relationship_logits, next_sentence_label))",
           "+ nsp_loss(seq_relationship_logits, next_sentence_label))", "pretraining_loss"),
    Mutant("common/nn/losses.py", "BCE: log(1 + exp(|z|)) instead of exp(-|z|)",
           "return (z.clamp_min(0) - z * y + torch.log1p(torch.exp(-z.abs()))).mean()",
           "return (z.clamp_min(0) - z * y + torch.log1p(torch.exp(z.abs()))).mean()", "classification_loss"),
    Mutant("common/nn/losses.py", "MSE: absolute error", "return (p - targets.to(p.dtype)).pow(2).mean()",
           "return (p - targets.to(p.dtype)).abs().mean()", "classification_loss"),
    Mutant("common/nn/losses.py", "problem type: integer labels read as multi-label",
           "return \"single_label_classification\"", "return \"multi_label_classification\"",
           "problem_type"),
    # ------------------------------------------------------------ dropout.py
    Mutant("common/nn/dropout.py", "dropout without the 1 / (1 - p) rescaling",
           "scale = keep_mask(uniform_15bit(x.shape), p).to(x.dtype).mul_(1.0 / (1.0 - p))",
           "scale = keep_mask(uniform_15bit(x.shape), p).to(x.dtype)", "scales_the_rest"),
    Mutant("common/nn/dropout.py", "dropout keeps with probability p instead of 1 - p",
           "keep = v.gt(f)", "keep = v.le(f)", "zeroes_a_fraction"),
    Mutant("common/nn/dropout.py", "dropout: p rounded down to the 15-bit grid (ties always kept)",
           "keep.view(-1)[ties] = torch.rand(ties.numel()) >= (q - f)", "keep.view(-1)[ties] = True",
           "resolves_the_tie"),
    Mutant("common/nn/dropout.py", "dropout: the 16-bit pieces not masked to 15 bits (signed, not uniform)",
           ".bitwise_and_(2 ** BITS - 1)", "", "four_alike"),
    Mutant("common/nn/dropout.py", "dropout active in evaluation",
           "if not training or p == 0.0:\n        return x", "if p == 0.0:\n        return x",
           "identity_in_eval"),
    # ------------------------------------------------------------ norms.py
    Mutant("common/nn/norms.py", "RMSNorm: mean of x instead of the mean of squares",
           "mean_square = x32.pow(2).mean(dim=-1, keepdim=True)", "mean_square = x32.mean(dim=-1, keepdim=True).abs()",
           "rms_norm", tests=NN_TESTS + ("tests/test_llama.py",)),
    Mutant("common/nn/norms.py", "RMSNorm: eps outside the square root",
           "normalized = x32 * torch.rsqrt(mean_square + self.eps)",
           "normalized = x32 / (mean_square.sqrt() + self.eps)", "rms_norm", tests=NN_TESTS + ("tests/test_llama.py",)),
    Mutant("common/nn/norms.py", "RMSNorm: weight ignored", "return self.weight * normalized.to(x.dtype)",
           "return normalized.to(x.dtype)", "rms_norm", tests=NN_TESTS + ("tests/test_llama.py",)),
    # ------------------------------------------------------------ beyond the math layer: the update
    Mutant("common/train/trainer.py", "Trainer: scheduler stepped before the optimizer",
           "        self.optimizer.step()\n        self.lr_scheduler.step()\n",
           "        self.lr_scheduler.step()\n        self.optimizer.step()\n",
           "learning_rate_applied", tests=("tests/test_trainer_updates.py",)),
    Mutant("common/train/trainer.py", "Trainer: gradient clipping off",
           "max_norm = args.max_grad_norm if args.max_grad_norm > 0 else float(\"inf\")",
           "max_norm = float(\"inf\")", "max_grad_norm", tests=("tests/test_trainer_updates.py",)),
    Mutant("common/train/trainer.py", "Trainer: clipping at twice max_grad_norm",
           "max_norm = args.max_grad_norm if args.max_grad_norm > 0 else float(\"inf\")",
           "max_norm = 2 * args.max_grad_norm if args.max_grad_norm > 0 else float(\"inf\")",
           "max_grad_norm", tests=("tests/test_trainer_updates.py",)),
)


def patch_jobs(root: Path, mutants: Sequence[Mutant], narrow: bool) -> list:
    jobs = []
    for m in mutants:
        text = (root / m.path).read_text(encoding="utf-8")
        patched = engine.apply_patch(text, m.old, m.new, f"{m.path}: mutant {m.name!r}")
        files = [f for f in m.tests if (root / f).is_file()]
        k = ["-k", m.caught_by] if narrow and m.caught_by else []
        # the grading plugin: Hypothesis reports its first failing example instead of shrinking it
        jobs.append((m.name, m.path, patched, [*files, *k, "-p", "tutorials.grading_plugin"]))
    return jobs


def run_mutants(roots: Sequence[Path], mutants: Sequence[Mutant] = MUTANTS, echo=None) -> list:
    """One verdict per mutant: first the test it names, then (if that passed) all its test files."""
    first = [i for i, m in enumerate(mutants) if m.caught_by]
    verdicts = dict(zip(first, engine.run_patches(
        roots, patch_jobs(roots[0], [mutants[i] for i in first], True),
        echo=lambda v: v.caught and echo and echo(v))))
    rest = [i for i in range(len(mutants)) if i not in verdicts or not verdicts[i].caught]
    verdicts.update(zip(rest, engine.run_patches(
        roots, patch_jobs(roots[0], [mutants[i] for i in rest], False), echo=echo)))
    return [verdicts[i] for i in range(len(mutants))]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", metavar="WORD", help="only the mutants whose name holds WORD")
    parser.add_argument("--workers", type=int, default=engine.default_workers(),
                        help="test processes at a time (default: %(default)s)")
    parser.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or args.only.lower() in m.name.lower()]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        roots = [engine.copy_course(Path(tmp) / f"course{i}") for i in range(max(1, args.workers))]
        verdicts = run_mutants(roots, chosen, echo=lambda v: print(engine.format_verdict(v), flush=True))
    if args.json:
        Path(args.json).write_text(json.dumps([v.__dict__ for v in verdicts], indent=1), encoding="utf-8")
    survivors = [v.label for v in verdicts if not v.caught]
    print(f"{len(verdicts) - len(survivors)}/{len(verdicts)} mutants caught in "
          f"{time.perf_counter() - start:.0f} s" + (f"; SURVIVED: {survivors}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    engine.ex.run_cli(main)
