"""One statement of each loss, word for word wherever the course states it.

L_LM was once written four ways (a sum, a mean over T-1, over n, over T) in the README, losses.py,
tutorial 08, minigpt/train.py and the demo. Now each of those places states the one formula of
docs/notation.md, and the code's default (causal_lm_loss's reduction="mean") is that mean.
"""
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
