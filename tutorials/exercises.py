"""The graded exercises of the course: write a student copy of the code, then grade it.

    python -m tutorials.exercises list                           # exercises, tutorials, tests
    python -m tutorials.exercises make --out ../student [--force]   # `make exercises`
    cd ../student && python -m tutorials.exercises grade [--strict] # `make grade`
    ... grade --require-level Silver --junit grade.xml --extra-tests ../teacher_tests   # autograder
    python -m tutorials.exercises grade --reference   # a teacher: the reference passes its graders

The reference code marks each exercise with two comment lines around whole functions:

    # BEGIN EXERCISE <name>
    def padding_mask(attention_mask):
        \"\"\"docstring\"\"\"
        ...body...
    # END EXERCISE <name>

`make` copies the course (packages, tests, tutorials, Makefile, pyproject.toml, the READMEs) and
replaces the BODY of every function in a region by `raise NotImplementedError("<what to do>")`;
signature, docstring and markers stay, so the copy can be graded (and stubbed) again. The copy
carries no line of a solution: the teachers' material (TEACHER_FILES: the named mistakes and the
mutants, whose `old=` patches are reference lines) stays in the reference tree, and the copy is
written outside the reference folder, marked by STUDENT_MARK. `grade` grades a student copy; in the
reference tree (no mark) it refuses unless --reference says a teacher means it. `grade`
runs each exercise's tests (REGISTRY below: test files + `-k` keywords) in ONE pytest run, reads
the outcomes from pytest's JUnit XML, and prints a table and the grade ladder (LEVELS), in the
ladder's order, which is an order in which the exercises can be solved one after the other
(tests/test_ladder.py walks it). It writes the grade as data to grade.json
(tutorials/schemas/grade.schema.json) and, with --junit, as JUnit XML (grade.junit.xsd).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python tutorials/exercises.py` works as well as `-m`
    sys.path.insert(0, str(ROOT))

from common.errors import UserError, run_cli  # noqa: E402

# The folders whose .py files may hold exercise regions, and what a student copy contains.
SOURCE_DIRS = ("common", "minibert", "minigpt", "minit5", "interpret")
COPY_DIRS = ("common", "minibert", "minigpt", "minit5", "interpret", "demo", "tests", "tutorials", "bench", "docs")
COPY_FILES = ("Makefile", "pyproject.toml", "README.md", "README.zh-CN.md", ".gitignore", "LICENSE")
# Teachers' material: its `old=` patches are the reference solution lines, so it never enters a copy.
TEACHER_FILES = ("tutorials/mistakes.py", "tests/mutants.py", "tests/test_mistakes.py")
STUDENT_MARK = "STUDENT_COPY.md"  # at the root of every student copy; grade checks for it
SKIP_PARTS = ("__pycache__", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints")
SKIP_SUFFIXES = (".pyc", ".ipynb", ".egg-info")

MARKER = re.compile(r"^\s*#\s*(BEGIN|END)\s+EXERCISE\b(.*)$")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
KEYWORD = re.compile(r"^\w+$")


class ExerciseError(UserError):
    """A marker, registry or folder problem; the message names the file (and line) and the fix."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: where its region lives, what to read, and which tests grade it.

    A test grades the exercise when it is in one of `tests`, one of `keywords` occurs in its name
    or class name (any test, if `keywords` is empty) and none of `exclude` does, ignoring case:
    the selection of `pytest <tests> -k "(k1 or k2) and not x1"`.
    `requires`: the exercises whose code these tests also run (their failure shows up here too).
    """
    name: str
    source: str  # the file holding the region
    tutorial: str
    tests: tuple[str, ...]
    hint: str  # the formula or rule to implement, one line
    keywords: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()

    def k_expression(self) -> str:
        anyof = " or ".join(self.keywords)
        parts = [f"({anyof})" if len(self.keywords) > 1 and self.exclude else anyof]
        parts = parts if self.keywords else []
        parts += [f"not {word}" for word in self.exclude]
        return " and ".join(parts)

    def pytest_command(self) -> str:
        k = self.k_expression()
        return f"python -m pytest {' '.join(self.tests)}" + (f' -k "{k}"' if k else "")

    def selects(self, test_file: str, names: Sequence[str]) -> bool:
        """Whether the test `test_file::names[0]::...::names[-1]` grades this exercise."""
        def occurs(word: str) -> bool:
            return any(word.lower() in name.lower() for name in names)
        return (test_file in self.tests
                and (not self.keywords or any(occurs(w) for w in self.keywords))
                and not any(occurs(w) for w in self.exclude))


def _exercises(*items: Exercise) -> dict[str, Exercise]:
    return {e.name: e for e in items}


REGISTRY: dict[str, Exercise] = _exercises(
    Exercise(
        "masks", "common/nn/masks.py", "tutorials/02_masks.py", ("tests/test_masks.py",),
        keywords=("padding_mask", "causal_mask"),
        hint="padding_mask turns a (B, T) 1/0 attention_mask into bool (B, 1, 1, T); causal_mask "
             "is M[i, j] = j <= i + (T_k - T_q), shape (1, 1, T_q, T_k)",
    ),
    Exercise(
        "attention", "common/nn/attention.py", "tutorials/01_attention.py",
        ("tests/test_attention.py",), exclude=("kv_cache", "rejects_bad_arguments"),
        hint="softmax(Q K^T / sqrt(d_k) + M) V; blocked scores get mask_value(dtype); dropout "
             "on the weights only when training",
        requires=("masks",),
    ),
    Exercise(
        "kv_cache", "common/nn/attention.py", "tutorials/09_sampling_kv_cache.py",
        ("tests/test_attention.py", "tests/test_blocks.py"), keywords=("kv_cache",),
        hint="write the new (B, h, T_new, d_k) keys/values after the filled part of the "
             "preallocated buffers, return the filled part; ValueError when they do not fit",
        requires=("attention", "masks", "decoder_block"),
    ),
    Exercise(
        "mlm_masking", "common/nn/masks.py", "tutorials/04_mlm.py", ("tests/test_masks.py",),
        keywords=("mlm_",),
        hint="select each non-special token with probability p; of those 80% -> [MASK], 10% -> "
             "a random token, 10% unchanged; labels = original id where selected, else -100",
    ),
    Exercise(
        "encoder_block", "common/nn/blocks.py", "tutorials/03_encoder_block.py",
        ("tests/test_blocks.py",), keywords=("encoder_block",),
        hint="post-LN: X' = LayerNorm(X + Dropout(MultiHead(X))), Y = LayerNorm(X' + Dropout(FFN(X'))); "
             "attention.self gives Concat(head_1..head_h), attention.output.dense is the one W^O",
        requires=("attention", "masks"),
    ),
    Exercise(
        "decoder_block", "common/nn/blocks.py", "tutorials/08_gpt.py", ("tests/test_blocks.py",),
        keywords=("decoder_",), exclude=("kv_cache",),
        hint="pre-LN: x += Dropout(MultiHead(LN_1(x))); with cross-attention x += "
             "Dropout(MultiHead(LN_c(x), enc)); x += Dropout(FFN(LN_2(x)))",
        requires=("attention", "masks"),
    ),
    Exercise(
        "embeddings", "minibert/model.py", "tutorials/03_encoder_block.py",
        ("tests/test_bert_parity.py",), keywords=("outputs_and_loss", "hidden_states"),
        hint="E = Dropout(LayerNorm(E_token[x] + E_position[0..T-1] + E_segment[s])); positions "
             "default to 0..T-1 and token_type_ids to zeros",
        requires=("attention", "masks", "encoder_block", "mlm_loss", "nsp_loss", "cross_entropy",
                  "log_softmax"),
    ),
    Exercise(
        "nsp_pairs", "common/data/language_modeling.py", "tutorials/05_nsp.py", ("tests/test_data.py",),
        keywords=("test_nsp",), exclude=("too_small",),
        hint="per pair: fill a chunk of whole sentences up to the target length, A = its first k "
             "sentences; IsNext (label 0): B = the rest; NotNext (label 1): B from another "
             "document, unused sentences go back; then truncate the longer side to fit",
    ),
    Exercise(
        "sampling", "common/nn/sampling.py", "tutorials/09_sampling_kv_cache.py",
        ("tests/test_generate.py",), keywords=("top_k", "top_p", "sampling"),
        hint="greedy: argmax; sampling: z / tau, keep the k largest logits (others -inf), keep the "
             "smallest most-likely set whose probability reaches p, then draw from softmax",
        requires=("attention", "masks", "decoder_block", "kv_cache"),
    ),
    Exercise(
        "speculative_sampling", "common/generation/speculative.py", "tutorials/09_sampling_kv_cache.py",
        ("tests/test_generation.py",), keywords=("accept_draft", "speculative"),
        hint="for each drafted token d_i: keep it with probability min(1, p_i(d_i) / q_i(d_i)) (r q < p, r ~ U[0, 1)); "
             "at the first rejection draw from max(0, p_i - q_i) normalised and stop; all kept: one more from p_g",
        requires=("sampling",),
    ),
    Exercise(
        "log_softmax", "common/nn/losses.py", "tutorials/04_mlm.py", ("tests/test_losses.py",),
        keywords=("test_log_softmax",),
        hint="log p = z - logsumexp(z), logsumexp(z) = m + log sum exp(z - m), m = max z",
    ),
    Exercise(
        "cross_entropy", "common/nn/losses.py", "tutorials/04_mlm.py", ("tests/test_losses.py",),
        keywords=("test_cross_entropy",),
        hint="CE = -log p_y per row; rows whose target is -100 count for nothing; 'mean' "
             "divides by the kept rows (0, not NaN, when none is kept)",
        requires=("log_softmax",),
    ),
    Exercise(
        "mlm_loss", "common/nn/losses.py", "tutorials/04_mlm.py", ("tests/test_losses.py",),
        keywords=("test_mlm_loss",),
        hint="L_MLM = -(1/|I|) sum_{i in I} log p(x_i | x~) (the mean; 'sum' drops 1/|I|), "
             "I = the positions whose label is not -100",
        requires=("cross_entropy",),
    ),
    Exercise(
        "nsp_loss", "common/nn/losses.py", "tutorials/05_nsp.py", ("tests/test_losses.py",),
        keywords=("test_nsp_loss", "test_pretraining_loss"),
        hint="L_NSP = -log p(y | c) over 2 classes, c the pooled [CLS] vector, y = 0 IsNext, 1 NotNext",
        requires=("cross_entropy", "mlm_loss"),
    ),
    Exercise(
        "causal_lm_loss", "common/nn/losses.py", "tutorials/08_gpt.py", ("tests/test_losses.py",),
        keywords=("test_causal_lm_loss",),
        hint="L_LM = -(1/N) sum_t log p(x_t | x_<t) over the N positions with a next-token label: "
             "score logits[:, :-1] against labels[:, 1:]",
        requires=("cross_entropy",),
    ),
    Exercise(
        "bpe_merge", "common/text/bpe.py", "tutorials/12_tokens.py", ("tests/test_bpe.py",),
        keywords=("rescanning", "ties_go", "overlapping_pairs"),
        hint="count(a, b) = sum_w freq(w) x #{i: w[i] = a, w[i+1] = b}; take the max count (ties: the "
             "greatest (bytes(a), bytes(b))); rewrite every word with merge_pair",
    ),
    Exercise(
        "bpe_encode", "common/text/bpe.py", "tutorials/12_tokens.py", ("tests/test_bpe.py",),
        keywords=("bpe_encode_merges_by_rank", "transformers_ids_on_real_text", "trained_vocabulary_gives"),
        hint="while some adjacent pair has a rank: merge the pair of LOWEST rank (all its occurrences, "
             "left to right, merge_pair) into ranks[pair][1]",
    ),
    Exercise(
        "rms_norm", "common/nn/norms.py", "tutorials/17_llama.py", ("tests/test_llama.py",),
        keywords=("test_rms_norm_",),
        hint="y = x / sqrt(mean(x^2) + eps) * weight over the last dimension; the mean of squares in "
             "float32, cast back to x's dtype before the weight",
    ),
    Exercise(
        "swiglu", "common/nn/blocks.py", "tutorials/17_llama.py", ("tests/test_llama.py",),
        keywords=("test_swiglu_is",),
        hint="SwiGLU(x) = (silu(x W_1) * (x W_3)) W_2: down_proj(act(gate_proj(x)) * up_proj(x))",
    ),
    Exercise(
        "rope", "common/nn/rope.py", "tutorials/17_llama.py", ("tests/test_llama.py",),
        keywords=("test_rope_",),
        hint="RoPE(x) = x * cos + rotate_half(x) * sin, with cos, sin (B, T, d) broadcast over the "
             "heads: (B, 1, T, d)",
    ),
    Exercise(
        "lora_linear", "common/nn/lora.py", "tutorials/15_lora.py", ("tests/test_lora.py",),
        keywords=("step_0", "layer_computes", "outputs_and_gradients", "merged_model", "frozen_weights",
                  "we_load", "from_pretrained_of"),
        hint="delta W = (alpha / r) B A; y = base_layer(x) + (alpha / r) lora_B(lora_A(dropout(x))), "
             "just base_layer(x) once merged",
        requires=("attention", "masks", "encoder_block", "decoder_block", "embeddings", "cross_entropy",
                  "log_softmax", "causal_lm_loss"),
    ),
    Exercise(
        "assistant_labels", "common/data/instructions.py", "tutorials/16_instruction_tuning.py",
        ("tests/test_instructions.py",), keywords=("label", "loss_equals", "packing"),
        hint="labels[t] = input_ids[t] after an <|assistant|> marker up to and including the <|end|> "
             "that closes the turn, -100 everywhere else (the marker too)",
        requires=("attention", "masks", "decoder_block", "cross_entropy", "log_softmax", "causal_lm_loss"),
    ),
    Exercise(
        "relative_position_bucket", "minit5/model.py", "tutorials/13_t5.py", ("tests/test_t5_parity.py",),
        keywords=("relative_position_bucket",),
        hint="r = key - query; bidirectional: half the buckets for r > 0, n = |r|; causal: n = max(-r, 0); "
             "n_b = buckets of one direction; n < n_b/2 exact, else n_b/2 + floor(log(n / (n_b/2)) / "
             "log(D / (n_b/2)) * (n_b - n_b/2)), at most n_b - 1",
    ),
    Exercise(
        "span_corruption", "common/data/span_corruption.py", "tutorials/13_t5.py", ("tests/test_span_corruption.py",),
        exclude=("known_lengths", "t5s_setting"),
        hint="mask: noise_span_counts, then random_segmentation of the noise and of the kept tokens into "
             "n_spans parts each, kept first, alternating; corrupt: each run of noise -> one sentinel "
             "(first_sentinel_id - k) in the inputs, sentinel + the run in the targets",
    ),
    Exercise(
        "beam_search", "common/generation/beam_search.py", "tutorials/14_t5_decoding.py", ("tests/test_t5_parity.py",),
        keywords=("beam",),
        hint="per step: log_softmax + running scores, top 2K of K V; among the first K, eos (or max length) "
             "-> finished with score / n^length_penalty (n = tokens generated, eos included); the K best "
             "others run on; reorder the caches",
        requires=("attention", "masks", "kv_cache", "sampling", "rms_norm", "relative_position_bucket"),
    ),
    Exercise(
        "online_softmax", "common/nn/flash_attention.py", "tutorials/21_training_costs.py",
        ("tests/test_flash_attention.py",), exclude=("rejects", "tiled_attention_gives"),  # not the argument checks,
        # nor the whole-model tests (they run GPT and BERT, which later exercises stub)
        hint="m' = max(m, rowmax(S_b)); l' = exp(m - m') l + rowsum(exp(S_b - m')); acc' = exp(m - m') acc "
             "+ (exp(S_b - m') * keep) V_b; dropout's keep never enters l",
        requires=("attention", "masks"),
    ),
    Exercise(
        "distillation_loss", "common/nn/distillation.py", "tutorials/20_smaller_models.py",
        ("tests/test_distillation.py",), keywords=("kl_is_zero", "t_squared", "teacher_gets_no_gradient", "objective"),
        hint="T^2 * mean over rows of sum_k p_t (log p_t - log p_s), p = softmax(z / T) for both models, "
             "the teacher detached, only the rows where mask is True",
        requires=("log_softmax",),
    ),
    Exercise(
        "quantize_absmax", "common/nn/quantization.py", "tutorials/20_smaller_models.py",
        ("tests/test_quantization.py",),
        keywords=("rounding_error", "zero_rows", "int8_linear", "int8_kernel", "int8_embedding", "tied_weights"),
        hint="per row of the last axis: s = max|x| / 127 (1 for an all-zero row), q = clamp(round(x / s), "
             "-127, 127) as int8; return (q, s) with s of shape (..., 1)",
    ),
    Exercise(
        "induction_score", "interpret/induction.py", "tutorials/19_looking_inside.py",
        ("tests/test_interpret_experiments.py",), keywords=("induction_score",),
        hint="mean over the batch and the repeat's queries t = start + n .. start + 2n - 1 of "
             "A[l, b, h, t, t - n + 1] (the key after the first occurrence of x_t): an (L, H) grid",
    ),
    # post-training: preference tuning, rewards, evaluation
    Exercise(
        "dpo_loss", "common/nn/dpo.py", "tutorials/16_instruction_tuning.py", ("tests/test_dpo.py",),
        keywords=("dpo_loss", "log_2"),
        hint="L = mean over pairs of -log sigmoid(beta ((pi_w - ref_w) - (pi_l - ref_l))), with F.logsigmoid",
        requires=("attention", "masks", "decoder_block", "assistant_labels"),
    ),
    Exercise(
        "grpo_advantages", "common/nn/grpo.py", "tutorials/18_rewards.py", ("tests/test_grpo.py",),
        keywords=("advantages", "constant_reward", "rewarded"),
        hint="A = (r - mean of its group) / (sample std of its group + eps), each row of rewards (P, G) a group; "
             "r - mean only with normalize_by_std=False",
        requires=("attention", "masks", "decoder_block"),
    ),
    Exercise(
        "pass_at_k", "common/nn/evaluation.py", "tutorials/18_rewards.py", ("tests/test_evaluation.py",),
        keywords=("pass_at_k",),
        hint="pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod over i from n - c + 1 to n of (1 - k / i); 1 if n - c < k",
    ),
)


def requirements(name: str, registry: Mapping[str, Exercise] = REGISTRY) -> set[str]:
    """Every exercise `name` builds on, directly or through others."""
    seen: set[str] = set()
    todo = list(registry[name].requires)
    while todo:
        dep = todo.pop()
        if dep not in seen and dep in registry:
            seen.add(dep)
            todo += registry[dep].requires
    return seen


LEVELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Bronze", ("masks", "attention", "log_softmax", "cross_entropy", "mlm_loss", "nsp_loss",
                "causal_lm_loss", "bpe_merge", "bpe_encode")),
    ("Silver", ("encoder_block", "decoder_block", "mlm_masking", "nsp_pairs", "embeddings")),
    ("Gold", ("kv_cache", "sampling", "speculative_sampling")),
    ("Platinum", ("rms_norm", "swiglu", "rope", "lora_linear", "assistant_labels", "relative_position_bucket",
                  "span_corruption", "beam_search", "online_softmax", "distillation_loss", "quantize_absmax",
                  "induction_score", "dpo_loss", "grpo_advantages", "pass_at_k")),
)


# --------------------------------------------------------------------------------------------
# Finding the regions


@dataclass
class Function:
    qualname: str  # "KVCache.append"
    node: ast.AST
    start: int  # first line (decorators included), 1-based
    end: int


@dataclass
class Region:
    name: str
    path: str  # relative to the root, for messages
    begin: int  # line of "# BEGIN EXERCISE", 1-based
    end: int  # line of "# END EXERCISE"
    functions: list[Function] = field(default_factory=list)


def _all_functions(tree: ast.AST) -> list[Function]:
    """Every function and method of a module, with its dotted name and line span."""
    found: list[Function] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualname = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    found.append(Function(qualname, child, start, child.end_lineno))
                visit(child, qualname + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def find_regions_in_text(text: str, path: str, registry: Mapping[str, Exercise] = REGISTRY
                         ) -> list[Region]:
    """The regions of one file, each with its outermost functions; ExerciseError (naming the
    file and line) for unmatched markers, unknown names, or a region without a whole function."""
    regions: list[Region] = []
    open_region: Optional[Region] = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        match = MARKER.match(line)
        if not match:
            continue
        kind, name = match.group(1), match.group(2).strip()
        where = f"{path}:{lineno}"
        if not NAME.match(name):
            raise ExerciseError(f"{where}: '{line.strip()}' needs one lowercase exercise name, "
                                f"e.g. '# {kind} EXERCISE masks'")
        if kind == "BEGIN":
            if open_region is not None:
                raise ExerciseError(
                    f"{where}: BEGIN EXERCISE {name} inside region '{open_region.name}' begun at "
                    f"line {open_region.begin}; close it first with '# END EXERCISE "
                    f"{open_region.name}'")
            if name not in registry:
                raise ExerciseError(
                    f"{where}: unknown exercise '{name}'; add it to REGISTRY in "
                    f"tutorials/exercises.py or use one of: {', '.join(sorted(registry))}")
            open_region = Region(name, path, lineno, -1)
        else:
            if open_region is None:
                raise ExerciseError(f"{where}: END EXERCISE {name} without a BEGIN EXERCISE "
                                    f"{name} above it; add the BEGIN line or remove this one")
            if name != open_region.name:
                raise ExerciseError(
                    f"{where}: END EXERCISE {name} closes region '{open_region.name}' begun at "
                    f"line {open_region.begin}; the names must match")
            open_region.end = lineno
            regions.append(open_region)
            open_region = None
    if open_region is not None:
        raise ExerciseError(f"{path}:{open_region.begin}: BEGIN EXERCISE {open_region.name} is "
                            f"never closed; add '# END EXERCISE {open_region.name}' after its "
                            "functions")
    if not regions:
        return regions

    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as e:
        raise ExerciseError(f"{path}:{e.lineno}: cannot parse the file ({e.msg})") from None
    functions = _all_functions(tree)
    for region in regions:
        for fn in functions:
            inside = region.begin < fn.start and fn.end < region.end
            straddles = fn.start < region.begin < fn.end or fn.start < region.end < fn.end
            if straddles:
                raise ExerciseError(
                    f"{path}:{region.begin}: region '{region.name}' (lines {region.begin}-"
                    f"{region.end}) cuts through function {fn.qualname} (lines {fn.start}-"
                    f"{fn.end}); put the markers around whole functions")
            if inside and not any(o.start <= fn.start and fn.end <= o.end
                                  for o in region.functions):
                region.functions.append(fn)  # functions come outer-first, so nested ones skip
        if not region.functions:
            raise ExerciseError(
                f"{path}:{region.begin}: region '{region.name}' (lines {region.begin}-{region.end}) "
                "holds no complete function; an exercise region must contain whole functions")
    return regions


def _source_files(root: Path) -> list[Path]:
    return sorted(p for d in SOURCE_DIRS if (root / d).is_dir() for p in (root / d).rglob("*.py")
                  if not set(p.relative_to(root).parts) & set(SKIP_PARTS))


def find_regions(root: Path = ROOT, registry: Mapping[str, Exercise] = REGISTRY) -> list[Region]:
    """All exercise regions under the source folders of `root`."""
    regions = []
    for path in _source_files(root):
        rel = path.relative_to(root).as_posix()
        regions += find_regions_in_text(path.read_text(encoding="utf-8"), rel, registry)
    return regions


# --------------------------------------------------------------------------------------------
# Stubbing


def _docstring_node(fn: ast.AST) -> Optional[ast.Expr]:
    first = fn.body[0]
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return first
    return None


def stub_lines(exercise: Exercise, qualname: str, indent: str) -> list[str]:
    """`raise NotImplementedError("...")`: what to implement, what to read, what to run."""
    parts = [f"{exercise.name}: implement {qualname}: {exercise.hint}. ",
             f"Read {exercise.tutorial}, then run: {exercise.pytest_command()}"]
    return ([f"{indent}raise NotImplementedError(\n"]
            + [f"{indent}    {part!r}\n" for part in parts]
            + [f"{indent})\n"])


def stub_text(text: str, path: str, only: Optional[Iterable[str]] = None,
              registry: Mapping[str, Exercise] = REGISTRY) -> tuple[str, list[Region]]:
    """The file with the body of every function in the chosen regions replaced by a stub.

    Only the lines after the signature (and after the docstring, which stays) up to the
    function's last line change; everything else, markers included, is kept byte for byte.
    Returns (new text, the regions that were stubbed).
    """
    chosen = None if only is None else set(only)
    regions = [r for r in find_regions_in_text(text, path, registry)
               if chosen is None or r.name in chosen]
    lines = text.splitlines(keepends=True)
    replacements = []  # (first line to drop, last line to drop, new lines), 1-based
    for region in regions:
        for fn in region.functions:
            body = fn.node.body
            doc = _docstring_node(fn.node)
            removed = body[1:] if doc else body
            if doc:
                keep_until = doc.end_lineno
            else:
                # Comment lines between the signature and the first statement belong to the body.
                keep_until = body[0].lineno - 1
                while keep_until > fn.node.lineno and lines[keep_until - 1].strip()[:1] in ("#", ""):
                    keep_until -= 1
            if any(stmt.lineno <= keep_until for stmt in removed) or body[0].lineno == fn.node.lineno:
                raise ExerciseError(
                    f"{path}:{fn.node.lineno}: {fn.qualname} has code on its signature or docstring "
                    "line; put the body on lines of its own so it can be stubbed")
            indent = " " * body[0].col_offset
            new = stub_lines(registry[region.name], fn.qualname, indent)
            replacements.append((keep_until + 1, fn.end, new))
    for first, last, new in sorted(replacements, reverse=True):
        lines[first - 1:last] = new
    out = "".join(lines)
    try:
        ast.parse(out, filename=path)
    except SyntaxError as e:  # a bug here, not the user's
        raise AssertionError(f"stubbing {path} produced invalid Python at line {e.lineno}") from e
    return out, regions


# --------------------------------------------------------------------------------------------
# The student copy


def _course_files(root: Path) -> list[str]:
    """Relative paths of the files a student copy holds: git's view (tracked + untracked that are
    not ignored) when `root` is a git work tree, else a walk that skips caches and build output."""
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, check=True).stdout.strip()
        is_git_root = Path(top).resolve() == root.resolve()
    except (OSError, subprocess.CalledProcessError):
        is_git_root = False
    if is_git_root:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
             "--", *COPY_DIRS, *COPY_FILES],
            capture_output=True, text=True, check=True).stdout.split("\0")
        files = sorted({f for f in listed if f and (root / f).is_file()})
    else:
        files = [f for f in COPY_FILES if (root / f).is_file()]
        for d in COPY_DIRS:
            for p in sorted((root / d).rglob("*")) if (root / d).is_dir() else []:
                rel = p.relative_to(root)
                if p.is_file() and not set(rel.parts) & set(SKIP_PARTS) and not any(
                        part.endswith(SKIP_SUFFIXES) for part in rel.parts):
                    files.append(rel.as_posix())
    return [f for f in files if not set(Path(f).parts) & set(SKIP_PARTS)]


def _course_venv(root: Path) -> Optional[Path]:
    """The Python environment a student copy should reuse: the one running this tool, else
    `<root>/.venv`, else none (then the copy's Makefile builds its own)."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix).absolute()
    venv = root / ".venv"
    return venv.absolute() if (venv / "bin" / "python").exists() else None


def _check_out_folder(out: Path, root: Path, force: bool) -> None:
    out_r, root_r = out.resolve(), root.resolve()
    if out_r == root_r or out_r in root_r.parents:
        raise ExerciseError(f"--out {out} is the course folder or contains it; choose a new "
                            f"folder outside it, e.g. --out {root_r.parent / 'student'}")
    if root_r in out_r.parents:
        raise ExerciseError(f"--out {out} is inside the reference course {root_r}, beside its solutions "
                            f"(and a `git add -A` there would commit it); choose a folder outside it, "
                            f"e.g. --out {root_r.parent / 'student'}")
    if out.exists() and not out.is_dir():
        raise ExerciseError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ExerciseError(
                f"{out} already exists and is not empty (your work there would be lost); "
                "choose another --out, or pass --force to replace it")
        shutil.rmtree(out)


@dataclass
class CopyReport:
    out: Path
    files: int
    stubbed: dict[str, list[str]]  # exercise -> qualnames of the stubbed functions
    missing: list[str]  # registry exercises without a region


def make_student_copy(out: Path, root: Path = ROOT, only: Optional[Iterable[str]] = None,
                      force: bool = False, registry: Mapping[str, Exercise] = REGISTRY
                      ) -> CopyReport:
    """Write the course to `out` with the chosen exercises (default: all) stubbed."""
    out, root = Path(out), Path(root)
    chosen = list(registry) if only is None else list(only)
    unknown = [n for n in chosen if n not in registry]
    if unknown:
        raise ExerciseError(f"unknown exercise(s) {', '.join(unknown)}; "
                            f"known: {', '.join(registry)}")
    # Check every region before writing anything, so a marker error leaves no half copy.
    stubbed_texts: dict[str, str] = {}
    stubbed: dict[str, list[str]] = {}
    for path in _source_files(root):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        new, regions = stub_text(text, rel, chosen, registry)
        if regions:
            stubbed_texts[rel] = new
        for region in regions:
            stubbed.setdefault(region.name, []).extend(f.qualname for f in region.functions)
    _check_out_folder(out, root, force)

    files = [f for f in _course_files(root) if f not in TEACHER_FILES]
    for rel in files:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rel in stubbed_texts:
            dest.write_text(stubbed_texts[rel], encoding="utf-8")
        else:
            shutil.copy2(root / rel, dest)
    venv = _course_venv(root)
    if venv is not None and (out / "Makefile").is_file():
        # Reuse the course's environment, and never let the copy's `make` install into it: the
        # install rule (`pip install -e .` run here) would point the course's packages at the copy.
        # An empty STAMP drops that rule and leaves the other targets unchanged.
        makefile = out / "Makefile"
        makefile.write_text(
            "# Student copy written by `python -m tutorials.exercises make`: it runs with the course's\n"
            "# Python environment and installs nothing into it.\n"
            f"override VENV := {venv}\noverride STAMP :=\n\n"
            + makefile.read_text(encoding="utf-8"), encoding="utf-8")
    (out / STUDENT_MARK).write_text(
        "# Student copy of the course\n\nWritten by `python -m tutorials.exercises make` (`make exercises`) from "
        f"the reference course at {root.resolve()}.\nEach exercise's function body is a "
        "`raise NotImplementedError(...)` that says what to implement, what to read and what to run.\n"
        "Write the bodies in the ladder's order, then `make grade` here. The teachers' material (named "
        "mistakes, mutants) is not part of the copy, so `make mutants` does not run here.\n",
        encoding="utf-8")
    missing = [n for n in chosen if n not in stubbed]
    return CopyReport(out, len(files), stubbed, missing)


def is_student_copy(root: Path) -> bool:
    """Whether `root` is a student copy (`make` wrote STUDENT_MARK there), not the reference."""
    return (Path(root) / STUDENT_MARK).is_file()


# --------------------------------------------------------------------------------------------
# Grading


@dataclass
class TestOutcome:
    file: str
    names: tuple[str, ...]  # class names then the test name (with its parameters)
    outcome: str  # "passed", "failed", "skipped"
    message: str = ""

    @property
    def nodeid(self) -> str:
        return "::".join((self.file,) + self.names)


@dataclass
class ExerciseResult:
    name: str
    passed: int
    failed: list[TestOutcome]
    skipped: int
    problem: str = ""  # why it cannot pass however the tests go (no tests, import error)
    extra: int = 0  # how many of the tests that ran are a teacher's extra tests

    @property
    def total(self) -> int:
        return self.passed + len(self.failed)

    @property
    def ok(self) -> bool:
        return not self.problem and not self.failed and self.passed > 0


def parse_junit(xml_text: str, test_files: Sequence[str]
                ) -> tuple[list[TestOutcome], dict[str, str], dict[str, str]]:
    """pytest's JUnit XML -> (outcomes, {file: import error}, {file: reason it was skipped whole})."""
    modules = {f[:-3].replace("/", "."): f for f in test_files}
    outcomes, broken, skipped_files = [], {}, {}
    for case in ET.fromstring(xml_text).iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if not classname and name in modules:  # the module itself failed to import, or skipped
            if failure is not None:
                broken[modules[name]] = _summary(failure.text or failure.get("message") or "")
            elif skipped is not None:
                skipped_files[modules[name]] = skipped.text or skipped.get("message") or ""
            continue
        for module, file in modules.items():
            if classname == module or classname.startswith(module + "."):
                names = tuple(c for c in classname[len(module) + 1:].split(".") if c) + (name,)
                if failure is not None:
                    message = (failure.get("message") or "") + "\n" + (failure.text or "")
                    outcomes.append(TestOutcome(file, names, "failed", message))
                elif skipped is not None:
                    outcomes.append(TestOutcome(file, names, "skipped", skipped.get("message") or ""))
                else:
                    outcomes.append(TestOutcome(file, names, "passed"))
                break
    return outcomes, broken, skipped_files


@dataclass
class RunResult:
    results: dict[str, ExerciseResult]
    returncode: int
    output: str


def ladder_order(registry: Mapping[str, Exercise] = REGISTRY,
                 levels: Sequence[tuple[str, Sequence[str]]] = LEVELS) -> list[str]:
    """The exercises in the order a student solves them: level by level, as LEVELS lists them
    (exercises of the registry that no level names come last). Every exercise's `requires` come
    before it (tests/test_ladder.py walks this order)."""
    order = [n for _, members in levels for n in members if n in registry]
    return order + [n for n in registry if n not in order]


def level_of(name: str, levels: Sequence[tuple[str, Sequence[str]]] = LEVELS) -> Optional[str]:
    return next((level for level, members in levels if name in members), None)


def _union_k(exercises: Sequence[Exercise], files: Sequence[str]) -> str:
    """A -k expression that selects, file by file, every test some exercise may select (pytest
    matches a test file's name like any other keyword); the exact sorting happens afterwards.
    A file no exercise lists (a teacher's extra test) is selected whole."""
    terms = []
    for f in files:
        users = [e for e in exercises if f in e.tests]
        words = sorted({w for e in users for w in e.keywords})
        name = Path(f).name
        if users and all(e.keywords for e in users):
            terms.append(f"({name} and ({' or '.join(words)}))")
        else:
            terms.append(f"({name})")
    return " or ".join(terms)


EXTRA_FILE = re.compile(r"^test_\w*\.py$")


def extra_test_files(extra_dir: Path, registry: Mapping[str, Exercise] = REGISTRY
                     ) -> dict[str, list[str]]:
    """A teacher's folder of extra tests -> {exercise: its test files, relative to the folder}.

    A file grades the exercise its name starts with, `test_<exercise>.py` or
    `test_<exercise>_<more>.py` (the longest name wins: test_mlm_loss_x.py is mlm_loss), or the
    exercise whose name its first folder has (`<exercise>/test_*.py`). Other files (conftest.py,
    helpers) travel along; a test file that names no exercise is an error.
    """
    extra_dir = Path(extra_dir)
    if not extra_dir.is_dir():
        raise ExerciseError(f"--extra-tests {extra_dir}: not a folder; give the folder that holds "
                            "the teacher's test_<exercise>.py files")
    found: dict[str, list[str]] = {}
    for path in sorted(extra_dir.rglob("*.py")):
        rel = path.relative_to(extra_dir)
        if set(rel.parts) & set(SKIP_PARTS) or not EXTRA_FILE.match(rel.name):
            continue
        if len(rel.parts) > 1:
            name = rel.parts[0] if rel.parts[0] in registry else None
        else:
            stem = rel.stem[len("test_"):]
            matches = [n for n in registry if stem == n or stem.startswith(n + "_")]
            name = max(matches, key=len) if matches else None
        if name is None:
            raise ExerciseError(
                f"{path}: a teacher's test file must be named test_<exercise>.py (or "
                f"test_<exercise>_<more>.py) or lie in a folder <exercise>/; exercises: "
                f"{', '.join(registry)}")
        found.setdefault(name, []).append(rel.as_posix())
    if not found:
        raise ExerciseError(f"--extra-tests {extra_dir}: no test_<exercise>.py file in it")
    return found


def _stage_extra_tests(root: Path, extra_dir: Path) -> Path:
    """Copy the teacher's folder into <root>/tests/_teacher_*/ (removed after the run), so its
    tests run beside the course's ones, with tests/conftest.py; __init__.py files make the
    module names unique (tests/_teacher_x/test_masks.py cannot clash with tests/test_masks.py)."""
    base = root / "tests" if (root / "tests").is_dir() else root
    staged = Path(tempfile.mkdtemp(prefix="_teacher_", dir=base))
    shutil.copytree(extra_dir, staged, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(*SKIP_PARTS, "*.pyc"))
    for folder in [staged, *(p for p in staged.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return staged


def pytest_arguments(files: Sequence[str], exercises: Sequence[Exercise], junit: Path
                     ) -> list[str]:
    """pytest's arguments for one grading run (after `python -m pytest`). One exercise whose
    files are all its own runs with its exact `-k` (what its stub message tells the student to
    run); several share one run, selected file by file, and are sorted afterwards."""
    if len(exercises) == 1 and set(files) <= set(exercises[0].tests):
        k = exercises[0].k_expression()
        k_args = ["-k", k] if k else []
    else:
        k_args = ["-k", _union_k(exercises, files)] if files else []
    return [*files, *k_args, "-p", "no:cacheprovider", "-p", "tutorials.grading_plugin", "-q",
            f"--junitxml={junit}"]


def sort_outcomes(exercises: Sequence[Exercise], root: Path, outcomes: Sequence[TestOutcome],
                  broken: Mapping[str, str], skipped_files: Mapping[str, str],
                  extra: Optional[Mapping[str, Sequence[str]]] = None
                  ) -> dict[str, ExerciseResult]:
    """The outcomes of one pytest run, sorted by exercise: its mapped tests (files + keywords)
    and every test of its extra files (`extra`: {exercise: files, relative to `root`})."""
    extra = extra or {}
    results = {}
    for e in exercises:
        mine_extra = list(extra.get(e.name, ()))
        mine = [o for o in outcomes if e.selects(o.file, o.names) or o.file in mine_extra]
        ran = [o for o in mine if o.outcome != "skipped"]
        problem = ""
        files = list(e.tests) + mine_extra
        missing = [f for f in e.tests if not (root / f).is_file()]
        if missing:
            problem = f"test file missing: {', '.join(missing)}"
        elif any(f in broken for f in files):
            problem = "; ".join(f"could not import {f}: {broken[f]}" for f in files if f in broken)
        elif not ran and any(f in skipped_files for f in files):
            problem = "; ".join(f"{f} skipped: {skipped_files[f]}" for f in files
                                if f in skipped_files)
        elif not ran and mine:
            problem = f"all {len(mine)} tests skipped: {mine[0].message}"
        elif not mine:
            problem = f"no test matches {e.pytest_command()}"
        results[e.name] = ExerciseResult(
            e.name, passed=sum(o.outcome == "passed" for o in mine),
            failed=[o for o in mine if o.outcome == "failed"],
            skipped=sum(o.outcome == "skipped" for o in mine), problem=problem,
            extra=sum(o.file in mine_extra and o.outcome != "skipped" for o in mine))
    return results


def run_exercise_tests(root: Path = ROOT, only: Optional[Iterable[str]] = None,
                       registry: Mapping[str, Exercise] = REGISTRY,
                       pytest_args: Sequence[str] = (), stream: bool = False,
                       extra_tests: Optional[Path] = None) -> RunResult:
    """Run the tests of the chosen exercises (default: all, in ladder order) in one pytest process
    under `root` and sort the outcomes by exercise. `extra_tests`: a teacher's folder of
    test_<exercise>.py files (see extra_test_files), run with them and counted in the grade."""
    root = Path(root).resolve()
    names = ladder_order(registry) if only is None else list(only)
    exercises = [registry[n] for n in names]
    extra_map = extra_test_files(Path(extra_tests), registry) if extra_tests is not None else {}
    output, returncode, outcomes, broken, skipped_files = "", 0, [], {}, {}
    staged = _stage_extra_tests(root, Path(extra_tests)) if extra_map else None
    try:
        prefix = staged.relative_to(root).as_posix() + "/" if staged else ""
        extra = {n: [prefix + f for f in fs] for n, fs in extra_map.items() if n in names}
        files = sorted({f for e in exercises for f in e.tests if (root / f).is_file()}
                       | {f for fs in extra.values() for f in fs})
        if files:
            with tempfile.TemporaryDirectory() as tmp:
                junit = Path(tmp) / "junit.xml"
                cmd = [sys.executable, "-m", "pytest",
                       *pytest_arguments(files, exercises, junit), *pytest_args]
                env = dict(os.environ)
                env["PYTHONPATH"] = os.pathsep.join([str(root)] + (
                    [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
                proc = subprocess.run(cmd, cwd=root, env=env, text=True,
                                      stdout=None if stream else subprocess.PIPE,
                                      stderr=subprocess.STDOUT)
                output, returncode = proc.stdout or "", proc.returncode
                if not junit.is_file():
                    raise ExerciseError(f"pytest did not run (exit {returncode}) in {root}: "
                                        f"{_summary(output) or 'see its output with --verbose'}")
                outcomes, broken, skipped_files = parse_junit(junit.read_text(encoding="utf-8"),
                                                              files)
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
    results = sort_outcomes(exercises, root, outcomes, broken, skipped_files, extra)
    return RunResult(results, returncode, output)


def _summary(message: str) -> str:
    """The line of a failure message that names the error (not a Hypothesis/ExceptionGroup
    wrapper line)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        line = line[1:].strip() if line.startswith("E ") else line
        if re.match(r"^[\w.]*(Error|Exception)\b", line) and not line.startswith("ExceptionGroup"):
            return line
    return lines[0] if lines else ""


def level_reached(results: Mapping[str, ExerciseResult],
                  levels: Sequence[tuple[str, Sequence[str]]] = LEVELS
                  ) -> tuple[Optional[str], Optional[str], list[str]]:
    """(the highest level whose exercises, and those of every level below, all pass; the next
    level; what it still needs). Each level includes the ones below it."""
    passed = {n for n, r in results.items() if r.ok}
    earned = None
    for level, members in levels:
        missing = [m for m in members if m not in passed]
        if missing:
            return earned, level, missing
        earned = level
    return earned, None, []


GRADE_FORMAT = "mini-bert-gpt grade 1"  # grade.json's "format"; tutorials/schemas/grade.schema.json


def grade_data(results: Mapping[str, ExerciseResult],
               levels: Sequence[tuple[str, Sequence[str]]] = LEVELS,
               registry: Mapping[str, Exercise] = REGISTRY,
               extra_tests: Optional[Path] = None) -> dict:
    """The grade as data (what grade.json holds; tutorials/schemas/grade.schema.json says it):
    per exercise the tests passed / total, status (pass | fail | error: cannot run), requires,
    the first failure; the level reached and what the next one still needs."""
    earned, next_level, missing = level_reached(results, levels)
    exercises = []
    for name, r in results.items():
        e = registry[name]
        first = None
        if r.problem:
            first = {"test": None, "message": r.problem}
        elif r.failed:
            first = {"test": r.failed[0].nodeid, "message": _summary(r.failed[0].message)[:500]}
        exercises.append({
            "name": name, "level": level_of(name, levels),
            "status": "pass" if r.ok else ("error" if r.problem else "fail"),
            "tests_passed": r.passed, "tests_total": r.total, "tests_skipped": r.skipped,
            "extra_tests": r.extra,
            "requires": sorted(requirements(name, registry)),
            "failing_requires": sorted(d for d in requirements(name, registry)
                                       if d in results and not results[d].ok),
            "first_failure": first, "tutorial": e.tutorial, "source": e.source,
        })
    return {
        "format": GRADE_FORMAT,
        "level": earned,
        "next_level": next_level,
        "next_level_needs": missing,
        "ladder": [{"level": level, "exercises": list(members),
                    "reached": all(m in results and results[m].ok for lvl, ms in
                                   levels[:i + 1] for m in ms)}
                   for i, (level, members) in enumerate(levels)],
        "exercises_passed": sum(r.ok for r in results.values()),
        "exercises_total": len(results),
        "extra_tests_dir": str(extra_tests) if extra_tests is not None else None,
        "exercises": exercises,
    }


def write_junit(data: Mapping, path: Path) -> None:
    """The grade as JUnit XML for an autograder (tutorials/schemas/grade.junit.xsd): one
    <testsuite> per level, one <testcase> per exercise; a failing exercise has a <failure> (its
    first failing test), one that cannot run an <error>."""
    by_level: dict[str, list[dict]] = {}
    for x in data["exercises"]:
        by_level.setdefault(x["level"] or "unlevelled", []).append(x)
    suites = ET.Element("testsuites", name="exercises")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for level, items in by_level.items():
        failures = sum(x["status"] == "fail" for x in items)
        errors = sum(x["status"] == "error" for x in items)
        suite = ET.SubElement(suites, "testsuite", name=level, tests=str(len(items)),
                              failures=str(failures), errors=str(errors), skipped="0", time="0")
        for x in items:
            case = ET.SubElement(suite, "testcase", classname=f"exercises.{level}",
                                 name=x["name"], time="0")
            if x["status"] != "pass":
                first = x["first_failure"] or {"test": None, "message": "no test passed"}
                tag = "failure" if x["status"] == "fail" else "error"
                child = ET.SubElement(case, tag, message=first["message"][:500],
                                      type="ExerciseFailed" if tag == "failure" else "ExerciseError")
                child.text = f"{first['test'] or x['name']}\n{first['message']}"
            out = ET.SubElement(case, "system-out")
            out.text = (f"{x['tests_passed']}/{x['tests_total']} tests passed"
                        + (f" ({x['extra_tests']} extra)" if x["extra_tests"] else "")
                        + (f"; needs {', '.join(x['failing_requires'])} first"
                           if x["failing_requires"] and x["status"] != "pass" else ""))
        totals["tests"] += len(items)
        totals["failures"] += failures
        totals["errors"] += errors
    for key, value in totals.items():
        suites.set(key, str(value))
    ET.indent(suites)
    Path(path).write_bytes(ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n")


def grade_report(results: Mapping[str, ExerciseResult],
                 levels: Sequence[tuple[str, Sequence[str]]] = LEVELS,
                 registry: Mapping[str, Exercise] = REGISTRY) -> str:
    """The table (exercise | tests passed/total | PASS/FAIL) and the grade ladder."""
    width = max(len(n) for n in results)
    rows = [f"{'exercise':<{width}}  tests   result", f"{'-' * width}  ------  ------"]
    for name, r in results.items():
        verdict = "PASS" if r.ok else "FAIL"
        note = f"  ({r.skipped} skipped)" if r.skipped else ""
        failing_needs = sorted(d for d in requirements(name, registry)
                               if d in results and not results[d].ok)
        if not r.ok and failing_needs:
            note += f"  needs {', '.join(failing_needs)} first"
        rows.append(f"{name:<{width}}  {f'{r.passed}/{r.total}':>6}  {verdict}{note}")
    details = []
    for name, r in results.items():
        if r.problem:
            details.append(f"  {name}: {r.problem}")
        elif r.failed:
            first = r.failed[0]
            details.append(f"  {name}: {first.nodeid}\n      {_summary(first.message)[:200]}")
    if details:
        rows += ["", "First failure of each exercise:"] + details

    passed = {n for n, r in results.items() if r.ok}
    earned, next_level, missing = level_reached(results, levels)
    rows.append("")
    rows.append(f"Passed {len(passed)}/{len(results)} exercises. Grade: {earned or 'none yet'} "
                f"(ladder: {' < '.join(level for level, _ in levels)}).")
    if missing:
        rows.append(f"For {next_level}, still to do: {', '.join(missing)}")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# Command line


def _cmd_list(args: argparse.Namespace) -> int:
    regions = {r.name: r for r in find_regions(Path(args.root))}
    for level, members in LEVELS:
        print(f"{level}:")
        for name in members:
            e = REGISTRY.get(name)
            if e is None:
                print(f"  {name:<15} (not in the registry yet)")
                continue
            where = (f"{regions[name].path}:{regions[name].begin}" if name in regions
                     else f"{e.source} (no region yet)")
            print(f"  {name:<15} {where:<28} read {e.tutorial}\n  {'':<15} test: "
                  f"{e.pytest_command()}")
    return 0


def _cmd_make(args: argparse.Namespace) -> int:
    report = make_student_copy(Path(args.out), Path(args.root), args.only, args.force)
    print(f"Wrote {report.files} files to {report.out}/ with {len(report.stubbed)} exercise(s) "
          "to implement:")
    for name, functions in report.stubbed.items():
        print(f"  {name:<15} {', '.join(functions)}  (read {REGISTRY[name].tutorial})")
    for name in report.missing:
        print(f"  {name:<15} NOT stubbed: no '# BEGIN EXERCISE {name}' region found "
              f"(expected in {REGISTRY[name].source})", file=sys.stderr)
    print(f"Next: cd {report.out} && make grade   (give the students this folder; the teachers' material "
          f"stays in {Path(args.root).resolve()})")
    return 0


def _cmd_grade(args: argparse.Namespace) -> int:
    if not Path(args.root).is_dir():
        raise ExerciseError(f"--root {args.root}: no such folder; write the student copy first "
                            "(`make exercises`, or python -m tutorials.exercises make --out DIR)")
    if not is_student_copy(Path(args.root)) and not args.reference:
        raise ExerciseError(
            f"{args.root} is the reference course (no {STUDENT_MARK}): its exercises are solved, so its "
            "grade says nothing about a student. Grade a student copy: `make exercises`, then `make grade` "
            "(or --root the copy); a teacher checking the reference against its graders passes --reference")
    extra = Path(args.extra_tests) if args.extra_tests else None
    run = run_exercise_tests(Path(args.root), args.only, stream=args.verbose,
                             pytest_args=args.pytest_args, extra_tests=extra)
    levels = LEVELS if args.only is None else (("All chosen", tuple(args.only)),)
    print(grade_report(run.results, levels, REGISTRY))
    data = grade_data(run.results, levels, REGISTRY, extra_tests=extra)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
        print(f"Wrote {args.json}")
    if args.junit:
        write_junit(data, Path(args.junit))
        print(f"Wrote {args.junit}")
    status = 0
    if args.strict and not all(r.ok for r in run.results.values()):
        status = 1
    if args.require_level:
        earned, _, _ = level_reached(run.results, LEVELS)
        names = [level for level, _ in LEVELS]
        if earned is None or names.index(earned) < names.index(args.require_level):
            print(f"Level {args.require_level} required, reached {earned or 'none'}: exit 1",
                  file=sys.stderr)
            status = 1
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tutorials.exercises", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", allow_abbrev=False, help="the exercises, their regions, tutorials and tests")
    p.add_argument("--root", default=str(ROOT), help="course folder (default: %(default)s)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("make", allow_abbrev=False, help="write a student copy with the exercises stubbed")
    p.add_argument("--out", required=True, help="folder to write (must be new or empty)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="stub only this exercise (repeatable; default: all)")
    p.add_argument("--root", default=str(ROOT), help="course folder (default: %(default)s)")
    p.set_defaults(func=_cmd_make)

    p = sub.add_parser("grade", allow_abbrev=False, help="run each exercise's tests and print the grade")
    p.add_argument("--root", default=str(ROOT), help="folder to grade (default: %(default)s)")
    p.add_argument("--only", action="append", metavar="NAME", choices=list(REGISTRY),
                   help="grade only this exercise (repeatable)")
    p.add_argument("--strict", action="store_true", help="exit 1 unless every exercise passes")
    p.add_argument("--require-level", choices=[level for level, _ in LEVELS], metavar="LEVEL",
                   help="exit 1 unless this level (%(choices)s) is reached")
    p.add_argument("--json", default="grade.json", metavar="FILE",
                   help="write the grade as JSON here (default: %(default)s; '' for none)")
    p.add_argument("--junit", metavar="FILE", help="also write the grade as JUnit XML here")
    p.add_argument("--extra-tests", metavar="DIR",
                   help="a teacher's folder of test_<exercise>.py files, run with each "
                        "exercise's tests and counted in the grade")
    p.add_argument("--reference", action="store_true",
                   help="grade the reference course itself (a teacher's check that it passes)")
    p.add_argument("--verbose", "-v", action="store_true", help="show pytest's output")
    p.add_argument("--pytest-args", nargs=argparse.REMAINDER, default=[],
                   help="anything after this goes to pytest, e.g. --pytest-args -x")
    p.set_defaults(func=_cmd_grade)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    run_cli(main)
