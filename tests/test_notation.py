"""One statement of each loss, word for word wherever the course states it.

L_LM was once written four ways (a sum, a mean over T-1, over n, over T) in the README, losses.py,
tutorial 08, minigpt/train.py and the demo. Now each of those places states the one formula of
docs/notation.md, and the code's default (causal_lm_loss's reduction="mean") is that mean.
"""
import re
from pathlib import Path

import torch

from common.nn.losses import causal_lm_loss

REPO = Path(__file__).resolve().parents[1]
L_LM = "L_LM = -(1/N) sum over the N predicted positions t of log p(x_t | x_<t)"
PLACES = ("README.md", "README.zh-CN.md", "docs/notation.md", "common/nn/losses.py", "tutorials/08_gpt.py",
          "minigpt/train.py", "demo/stages.py")


def statements(text: str) -> list[str]:
    """Every 'L_LM = ...' statement of a file, up to the end of its line (README's \\| unescaped)."""
    text = text.replace("\\|", "|")
    return [line[line.index("L_LM = "):] for line in text.splitlines() if "L_LM = " in line]


def test_every_place_states_L_LM_word_for_word():
    for place in PLACES:
        found = statements((REPO / place).read_text(encoding="utf-8"))
        assert found, f"{place} does not state L_LM; it should say: {L_LM}"
        for statement in found:
            assert statement.startswith(L_LM), (
                f"{place} states L_LM differently:\n  {statement}\nthe one statement is:\n  {L_LM}")


def test_the_default_reduction_is_that_mean_over_the_predicted_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    labels = torch.randint(0, 7, (2, 5))
    labels[1, 3] = -100  # one position without a label
    log_p = torch.log_softmax(logits, dim=-1)
    terms = [-log_p[b, t - 1, labels[b, t]] for b in range(2) for t in range(1, 5) if labels[b, t] != -100]
    by_hand = torch.stack(terms).mean()
    assert len(terms) == 7, "2 rows x 4 predicted positions, one without a label"
    got = causal_lm_loss(logits, labels)
    assert torch.allclose(got, by_hand, atol=1e-12), f"causal_lm_loss {float(got):.6f} != the mean {float(by_hand):.6f}"


# ------------------------------------------------------------------ every tutorial, one convention

NOTATION = (REPO / "docs/notation.md").read_text(encoding="utf-8")
HEADING = re.compile(r"^## Tutorials? (\d\d)(?:-(\d\d))?\b", re.M)


def covered_tutorials() -> set[int]:
    """The tutorial numbers docs/notation.md's headings cover ("## Tutorials 13-14: T5" -> {13, 14})."""
    return {n for m in HEADING.finditer(NOTATION) for n in range(int(m[1]), int(m[2] or m[1]) + 1)}


def test_notation_covers_every_tutorial_and_the_planned_ones():
    on_disk = {int(p.name[:2]) for p in (REPO / "tutorials").glob("[0-9][0-9]_*.py")}
    missing = sorted(on_disk - covered_tutorials())
    assert not missing, f"docs/notation.md has no '## Tutorial NN' section covering tutorials {missing}"
    planned = {18, 19, 20, 21}  # this round's new chapters (rewards, looking inside, smaller, costs)
    assert planned <= covered_tutorials(), f"no section yet for {sorted(planned - covered_tutorials())}"


# Each entry: a formula docs/notation.md must state, as it states it.
ENTRIES = {
    "row vectors": "`y = x W + b` with `W` of shape `(d_in, d_out)`",
    "PyTorch's (out, in)": "PyTorch stores `nn.Linear.weight` the other way, `(out, in)`",
    "MLM sampling": "`m_i ~ Bernoulli(0.15)`",
    "MLM as an expectation": "L_MLM = E_{(I, x~) ~ corrupt(x)} [ -(1/|I|) sum_{i in I} log p(x_i | x~) ]",
    "PLL": "`PLL(x) = sum_{t=1}^{T} log p(x_t | x_{-t})`",
    "T5 buckets": "bucket(n) = min(n_b - 1, n_b/2 + floor(log(n / (n_b/2)) / log(D / (n_b/2)) (n_b - n_b/2)))",
    "beam length penalty": "`log P(y | x) / n^lp`, `n` = tokens generated, `</s>` included",
    "BLEU": "`BLEU = 100 BP exp((1/4) sum_n log p_n)`",
    "RoPE": "omega_i = base^(-2i / d_k),   i = 0, ..., d_k/2 - 1",
    "SwiGLU": "SwiGLU `(silu(x W_1) * (x W_3)) W_2`",
    "LoRA": "`y = x W + b + (alpha / r) dropout(x) A B`",
    "rsLoRA": "rsLoRA's `alpha / sqrt(r)`",
    "SFT": "`L_SFT = -(1/n_A) sum over the n_A assistant tokens t of log p(x_t | x_<t)`",
    "DPO": "`L_DPO = -log sigmoid(beta ((log pi(y_w) - log pi_ref(y_w))",
    "warm-up": "`eta_s = eta_max s / S_w` for `s < S_w`",
}


def test_notation_states_each_new_entry():
    missing = {name: statement for name, statement in ENTRIES.items() if statement not in NOTATION}
    assert not missing, "docs/notation.md lacks these statements (or states them differently):\n" + "\n".join(
        f"  {name}: {statement}" for name, statement in missing.items())


# Slips that were found, and the places that must not carry them again.
COURSE = sorted({*REPO.glob("tutorials/[0-9][0-9]_*.py"), *REPO.glob("tutorials/zh/[0-9][0-9]_*.py"),
                 REPO / "README.md", REPO / "README.zh-CN.md", REPO / "docs/notation.md",
                 REPO / "tutorials/exercises.py", REPO / "minibert/pretrain.py", REPO / "minibert/heads.py",
                 REPO / "demo/stages.py", REPO / "common/nn/blocks.py", REPO / "common/nn/rope.py"})
SLIPS = {
    "W_2 (silu(": "SwiGLU in column form; the course writes (silu(x W_1) * (x W_3)) W_2",
    "base^(-2i/d)": "RoPE's exponent is over d_k, the head width: base^(-2i/d_k)",
    "p(x_i | x_{-i})": "the MLM loss conditions on the corrupted x~, not x_{-i} (that is the PLL)",
    "n^alpha": "the beam length penalty is lp (length_penalty); alpha is LoRA's",
    "sum of conditionals": "PLL is a sum of LOG-conditionals",
    "个条件概率的和": "PLL 是对数条件概率之和",
    "`PLL(x)`，条件概率之和": "PLL 是对数条件概率之和",
    "(N - N/2)": "the bucket count of one direction is n_b (N is the number of predicted positions)",
}


def test_no_place_repeats_a_fixed_slip():
    found = [f"{path.relative_to(REPO)}: '{slip}' ({why})" for path in COURSE if path.is_file()
             for slip, why in SLIPS.items() if slip in path.read_text(encoding="utf-8")]
    assert not found, "slips the notation fixed are back:\n" + "\n".join(found)


def test_the_bucket_claims_hold():
    from minit5.model import relative_position_bucket
    past = torch.arange(0, -200, -1)
    for bidirectional, exact in ((True, 7), (False, 15)):
        buckets = relative_position_bucket(past, bidirectional, 32, 128)
        alone = torch.bincount(buckets)[buckets] == 1
        got = int(alone.long().cumprod(0).sum()) - 1
        assert got == exact, (f"{'encoder' if bidirectional else 'decoder'}: each distance has its own "
                              f"bucket up to {got}, docs/notation.md says {exact}")


def test_the_span_corruption_docstring_example_is_what_corrupt_spans_returns():
    from common.data import span_corruption
    shown = {}
    for line in span_corruption.__doc__.splitlines():
        words = line.split()
        if line.startswith("    ") and words and words[0] in ("tokens", "inputs", "targets"):
            shown.setdefault(words[0], words[1:])
    tokens = shown["tokens"]
    noise = [w in shown["targets"] for w in tokens]  # the example's noise words occur once each
    inputs, targets = span_corruption.corrupt_spans(list(range(len(tokens))), noise, first_sentinel_id=99)
    name = {99: "<X>", 98: "<Y>", 97: "<Z>"}
    got = ([name.get(i, tokens[i] if i < len(tokens) else "?") for i in inputs],
           [name.get(i, tokens[i] if i < len(tokens) else "?") for i in targets])
    assert got == (shown["inputs"], shown["targets"]), (
        f"common/data/span_corruption.py's example shows inputs {shown['inputs']}, targets "
        f"{shown['targets']}; corrupt_spans returns {got[0]}, {got[1]}")


# Tutorial 21's Muon and scaling-study formulas, as docs/notation.md states them (the tutorial and
# common/train/muon.py, bench/scaling.py use the same names).
MUON_AND_SCALING = {
    "Newton-Schulz step": "`X_{k+1} = a X_k + (b A + c A^2) X_k`, `A = X_k X_k^T`",
    "its polynomial": "`p(sigma) = a sigma + b sigma^3 + c sigma^5`",
    "a run's compute": "`C = S C_step` FLOPs and reads `D = S B T` tokens",
    "the exponents from a loss surface": "`a = beta / (alpha + beta)` and\n`b = alpha / (alpha + beta)`",
}


def test_notation_states_muon_and_the_scaling_exponents():
    missing = {k: v for k, v in MUON_AND_SCALING.items() if v not in NOTATION}
    assert not missing, f"docs/notation.md lacks (or states differently) Tutorial 21's: {missing}"


# ------------------------------------------------------------------ the width is d, never C

# A shape written in a comment or docstring: a parenthesised tuple of axis names ("(B, T, d)", "(..., d)",
# "(1 or B, T, d)"). The width used to be written C there (PyTorch's "channels") while the formulas wrote d.
AXIS = r"(?:\.\.\.|\d*[A-Za-z](?:_[A-Za-z0-9]+)?|\d+|L \+ 1|1 or B|B K|B T)"
SHAPE = re.compile(r"\(" + AXIS + r"(?:, ?" + AXIS + r")+,?\)|\(" + AXIS + r",\)")
WIDTH_AS_C = re.compile(r"^\d*C$")  # C, 3C, 4C: the width (or a multiple of it) written C
SCANNED = ("common", "minibert", "minigpt", "minit5", "interpret", "demo", "bench", "tutorials", "tests")


def prose_of(source: str) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring of a Python source: where shapes are written in words."""
    import ast
    import io
    import tokenize
    found = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                found.append((node.body[0].lineno, doc))
    return sorted(found, key=lambda item: item[0])


def shapes_with_width_c(source: str) -> list[tuple[int, str]]:
    """(line, shape) for each shape in a comment or docstring that has an axis C (or 4C, ...)."""
    return [(line, m[0]) for line, text in prose_of(source) for m in SHAPE.finditer(text)
            if any(WIDTH_AS_C.match(axis.strip()) for axis in m[0][1:-1].split(",") if axis.strip())]


def test_the_detector_finds_a_width_written_c_and_passes_d():
    sample = 'def f(x):\n    """x ' + "(B, T, C) -> (B, 4C)" + '."""\n    return x  # ' + "(..., C)" + "\n"
    assert [s for _, s in shapes_with_width_c(sample)] == ["(B, T, C)", "(B, 4C)", "(..., C)"], (
        f"the detector should flag all three shapes of {sample!r}, got {shapes_with_width_c(sample)}")
    fixed = sample.replace("C)", "d)").replace("4C", "4d")
    assert shapes_with_width_c(fixed) == [], f"the detector flags the d form: {shapes_with_width_c(fixed)}"
    assert shapes_with_width_c('x = torch.randn(B, T, C)  # a code line, not prose\n') == [], (
        "code is not prose: only comments and docstrings are scanned")


def test_no_comment_or_docstring_writes_the_width_c():
    found = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            for line, shape in shapes_with_width_c(path.read_text(encoding="utf-8")):
                found.append(f"{path.relative_to(REPO)}:{line}: {shape}")
    assert not found, ("the model width is d (docs/notation.md); these comments or docstrings write it C, "
                       "write d (a head's width d_k):\n" + "\n".join(found))


# ------------------------------------------------------------------ "~" is a name or "drawn from", never "about"

APPROXIMATE_TILDE = re.compile(r"(?<![\w)])~ ?[0-9]")  # "~3 minutes", "p ~ 1/2"; not x~ nor a ~ N(0, 1)


def test_no_tilde_for_an_approximate_number():
    assert APPROXIMATE_TILDE.search("about ~3 minutes") and APPROXIMATE_TILDE.search("p(y | x) ~ 1/2"), (
        "the pattern must catch both spellings of an approximation")
    assert not APPROXIMATE_TILDE.search("m_i ~ Bernoulli(0.15), x~ and ~mask"), "those are the tilde's two uses"
    places = {*COURSE, *(p for folder in ("common", "minibert", "minigpt", "minit5", "interpret", "demo")
                         for p in (REPO / folder).rglob("*.py"))}
    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}" for path in sorted(places) if path.is_file()
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if APPROXIMATE_TILDE.search(line)]
    assert not found, ("docs/notation.md: an approximate number is written 'about' (or ≈), never '~':\n"
                       + "\n".join(found))
