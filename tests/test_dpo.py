"""The DPO loss (common/nn/dpo.py) against the formula written out, and what its gradient does."""
import copy
import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from common.data.instructions import ChatTokenizer, assistant_labels, encode_conversation
from common.nn.dpo import dpo_loss, sequence_log_probs
from common.text.char import CharTokenizer
from minigpt import GPT, GPTConfig

TOKENIZER = ChatTokenizer(CharTokenizer(sorted("abcdefgh ?")))


def test_sequence_log_probs_sum_the_answer_tokens_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, -100, -100, 6]])
    log_p = torch.log_softmax(logits, -1)
    expected = torch.stack([log_p[0, 1, 3] + log_p[0, 2, 4], log_p[1, 0, 1] + log_p[1, 3, 6]])
    got = sequence_log_probs(logits, labels)
    assert torch.allclose(got, expected, atol=1e-6), f"{got} vs by hand {expected}"


@given(st.lists(st.floats(-30, 30), min_size=4, max_size=4), st.floats(0.01, 2.0))
def test_dpo_loss_is_minus_log_sigmoid_of_beta_times_the_margin(values, beta):
    pw, pl, rw, rl = (torch.tensor([v]) for v in values)
    margin = (values[0] - values[2]) - (values[1] - values[3])
    expected = math.log1p(math.exp(-beta * margin)) if beta * margin > -30 else -beta * margin
    got = dpo_loss(pw, pl, rw, rl, beta).item()
    assert abs(got - expected) < 1e-4 * max(1.0, abs(expected)), f"{got} vs {expected} (margin {margin})"


def test_dpo_loss_is_the_mean_over_the_pairs():
    pw, pl, rw, rl = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 0.5]), torch.zeros(3), torch.zeros(3)
    each = [dpo_loss(pw[i:i + 1], pl[i:i + 1], rw[i:i + 1], rl[i:i + 1], 0.3).item() for i in range(3)]
    got = dpo_loss(pw, pl, rw, rl, 0.3).item()
    assert abs(got - sum(each) / 3) < 1e-6, f"batch loss {got}, mean of the per-pair losses {sum(each) / 3}"


def test_loss_is_log_2_when_the_policy_is_the_reference_and_a_step_prefers_the_chosen_answer():
    torch.manual_seed(0)
    policy = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=len(TOKENIZER)))
    reference = copy.deepcopy(policy).eval()
    prompt = [{"role": "user", "content": "ab?"}]
    batch = {}
    for name, answer in (("chosen", "ba"), ("rejected", "hh")):
        ids = encode_conversation(TOKENIZER, prompt + [{"role": "assistant", "content": answer}])
        batch[name] = (torch.tensor([ids]), torch.tensor([assistant_labels(ids, TOKENIZER.assistant_id,
                                                                          TOKENIZER.end_id)]))

    def log_probs(model):
        return [sequence_log_probs(model(ids).logits, labels) for ids, labels in batch.values()]

    with torch.no_grad():
        ref_w, ref_l = log_probs(reference)
    pol_w, pol_l = log_probs(policy)
    loss = dpo_loss(pol_w, pol_l, ref_w, ref_l, beta=0.5)
    assert abs(loss.item() - math.log(2)) < 1e-6, f"loss {loss.item()} at pi = pi_ref, expected log 2"
    loss.backward()
    with torch.no_grad():
        for p in policy.parameters():
            p -= 0.01 * p.grad  # a small step: first order, the margin must grow
        new_w, new_l = log_probs(policy)
    gained = (new_w - pol_w.detach()).item() - (new_l - pol_l.detach()).item()
    assert gained > 0, f"one step against dL/dtheta should favour the chosen answer; margin changed by {gained}"
