"""common/generation: the one loop (GPT beam search and the processors against transformers),
streaming, the packed fast path's switch, and speculative decoding (greedy equality, the modified
rejection rule's distribution by chi-square, bad input).

Models are tiny (width 16-32, 1-2 layers) with every weight perturbed, so a wrong formula changes tokens.
"""
import copy
import math
import warnings

import pytest
import torch

from common.errors import UserError
from common.generation.speculative import accept_draft, probabilities
from common.generation.config import GenerationConfig
from common.generation.streamers import TextStreamer
from minigpt import GPT, GPTConfig
import test_t5_parity  # tests/: its beam-search settings

transformers = pytest.importorskip("transformers", reason="transformers (test-only oracle) is not installed")

V = 40
TINY = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=V, bos_token_id=1, eos_token_id=1,
            pad_token_id=0)


def perturb(model, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers GPT2LMHeadModel, our GPT) with the same perturbed weights."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(**TINY)
    config._attn_implementation = "eager"
    hf = perturb(transformers.GPT2LMHeadModel(config))
    folder = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(folder)
    return hf, GPT.from_pretrained(folder).eval()


def hf_generate(hf, ids, mask, **settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf.generate(ids, attention_mask=mask, do_sample=False, pad_token_id=0, **settings)


def upto_eos(tokens, eos, start):
    """Each row up to its first eos after `start` (transformers and we may pad a finished row differently)."""
    rows = []
    for row in tokens.tolist():
        tail = row[start:]
        rows.append(row[:start] + (tail[:tail.index(eos) + 1] if eos in tail else tail))
    return rows


# T5's beam settings (tests/test_t5_parity.py) and the processors under beams
BEAM_SETTINGS = [*test_t5_parity.BEAM_SETTINGS, dict(num_beams=3, no_repeat_ngram_size=2),
                 dict(num_beams=2, repetition_penalty=1.5)]


@pytest.mark.parametrize("settings", BEAM_SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_gpt_beam_search_gives_transformers_gpt2_tokens(pair, settings):
    hf, ours = pair
    ids = torch.randint(2, V, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padded
    ids = ids.masked_fill(mask == 0, 0)
    eos = int(ours.generate(ids[:1], 4)[0, -1])  # a token the model writes, so beams end at different lengths
    for new in (4, 12):
        theirs = hf_generate(hf, ids, mask, max_new_tokens=new, eos_token_id=eos, **settings)
        mine = ours.generate(ids, new, attention_mask=mask, eos_token_id=eos, pad_token_id=0, **settings)
        assert upto_eos(mine, eos, 6) == upto_eos(theirs, eos, 6), f"{settings}, {new} new:\n{mine.tolist()}\n{theirs.tolist()}"


@pytest.mark.parametrize("settings", [dict(no_repeat_ngram_size=2), dict(no_repeat_ngram_size=1),
                                      dict(repetition_penalty=1.7), dict(repetition_penalty=0.6)])
def test_greedy_processors_give_transformers_tokens(pair, settings):
    hf, ours = pair
    ids = torch.randint(2, V, (3, 5), generator=torch.Generator().manual_seed(2))
    theirs = hf_generate(hf, ids, torch.ones_like(ids), max_new_tokens=20, eos_token_id=None, **settings)
    mine = ours.generate(ids, 20, **settings)
    plain = ours.generate(ids, 20)
    assert torch.equal(mine, theirs), f"{settings}:\n{mine.tolist()}\n{theirs.tolist()}"
    assert not torch.equal(mine, plain), f"{settings} changed nothing: the test cannot see it"


def test_no_repeat_ngram_size_never_repeats_an_ngram(pair):
    _, ours = pair
    out = ours.generate(torch.tensor([[5, 6, 5, 6, 5]]), 30, no_repeat_ngram_size=3)[0].tolist()
    grams = [tuple(out[i:i + 3]) for i in range(len(out) - 2)]
    assert len(grams) == len(set(grams)) or grams[:3].count(grams[0]) > 1, f"a 3-gram repeats: {out}"
    written = [tuple(out[i:i + 3]) for i in range(3, len(out) - 2)]  # the n-grams ending in new tokens
    assert len(written) == len(set(written)), f"a new 3-gram repeats: {out}"


# ----------------------------------------------------------------------------- streaming


class Chars:
    """A tokenizer for the streamer: id i is the character chr(97 + i % 26)."""

    def decode(self, ids, **kwargs):
        return "".join(chr(97 + i % 26) for i in ids)


def test_the_streamer_hands_out_exactly_the_generated_text(pair):
    _, ours = pair
    pieces = []
    streamer = TextStreamer(Chars(), skip_prompt=True, on_text=lambda text, end: pieces.append((text, end)))
    prompt = torch.tensor([[3, 4, 5]])
    out = ours.generate(prompt, 12, do_sample=True, seed=3, streamer=streamer)
    assert "".join(t for t, _ in pieces) == Chars().decode(out[0, 3:].tolist()), pieces
    assert len(pieces) == 13 and pieces[-1] == ("", True), f"one piece per token, then the end: {pieces}"


def test_a_streamer_refuses_beams_and_batches(pair):
    _, ours = pair
    streamer = TextStreamer(Chars())
    with pytest.raises(UserError, match="num_beams=1") as info:
        ours.generate(torch.tensor([[3, 4]]), 5, num_beams=2, streamer=streamer)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="batch of 2"):
        ours.generate(torch.tensor([[3, 4], [5, 6]]), 5, streamer=streamer)


def test_t5_streams_its_target(tmp_path):
    from minit5 import T5Config, T5ForConditionalGeneration
    torch.manual_seed(0)
    t5 = perturb(T5ForConditionalGeneration(T5Config(vocab_size=V, d_model=16, d_kv=4, d_ff=16, num_layers=1,
                                                    num_heads=2, dropout_rate=0.0)))
    pieces = []
    streamer = TextStreamer(Chars(), skip_prompt=True, on_text=lambda text, end: pieces.append(text))
    out = t5.generate(torch.tensor([[4, 5, 6, 1]]), max_new_tokens=9, eos_token_id=-1, streamer=streamer)
    assert "".join(pieces) == Chars().decode(out[0, 1:].tolist())


# ----------------------------------------------------------------------------- the packed path's switch


def test_the_switch_turns_the_packed_path_off_and_generate_says_which_path_ran(pair):
    _, ours = pair
    ids = torch.tensor([[3, 4, 5]])
    packed = ours.generate(ids, 20, return_dict_in_generate=True)
    cache = ours.generate(ids, 20, packed_step=False, return_dict_in_generate=True)
    recompute = ours.generate(ids, 20, use_cache=False, return_dict_in_generate=True)
    assert (packed.decode_path, cache.decode_path, recompute.decode_path) == ("packed", "cache", "recompute")
    assert torch.equal(packed.sequences, cache.sequences) and torch.equal(cache.sequences, recompute.sequences)


# ----------------------------------------------------------------------------- speculative decoding


def gpt(seed, n_layer, vocab=V, n_embd=32, block=64):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=2, n_embd=n_embd, dropout=0.0))
    return perturb(model, scale=0.5, seed=seed)


def test_speculative_greedy_equals_the_targets_greedy_output_token_for_token():
    """Many prompts, gammas and schedules; a draft that agrees often (a copy, perturbed) and a random one."""
    target = gpt(1, 2)
    close = gpt(1, 2)
    with torch.no_grad():
        for p in close.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(9)))
    drafts = {"close": close, "random": gpt(2, 1, n_embd=16)}
    g = torch.Generator().manual_seed(5)
    rates = {}
    for name, draft in drafts.items():
        kept = proposed = 0
        for trial in range(8):
            prompt = torch.randint(0, V, (1, 1 + trial % 5), generator=g)
            gamma, schedule = 1 + trial % 6, ("constant", "heuristic")[trial % 2]
            plain = target.generate(prompt, 24)
            fast = target.generate(prompt, 24, assistant_model=draft, num_assistant_tokens=gamma,
                                   num_assistant_tokens_schedule=schedule, return_dict_in_generate=True)
            assert torch.equal(fast.sequences, plain), (f"{name} draft, gamma {gamma} {schedule}, prompt "
                                                        f"{prompt.tolist()}:\n{fast.sequences.tolist()}\n{plain.tolist()}")
            kept, proposed = kept + fast.accepted_tokens, proposed + fast.draft_tokens
        rates[name] = kept / proposed
    assert rates["close"] > 0.5 > rates["random"], f"acceptance rates {rates}: the test must see both kept and cut drafts"


def test_speculative_greedy_stops_at_eos_as_the_target_does():
    target, draft = gpt(1, 2), gpt(3, 1)
    prompt = torch.tensor([[7, 8, 9]])
    free = target.generate(prompt, 20)
    eos = int(free[0, 9])
    plain = target.generate(prompt, 20, eos_token_id=eos)
    fast = target.generate(prompt, 20, eos_token_id=eos, assistant_model=draft, num_assistant_tokens=4)
    assert torch.equal(fast, plain), f"\n{fast.tolist()}\n{plain.tolist()}"


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """(Pearson's statistic over the cells with expected count >= 5, their degrees of freedom)."""
    expected = probs * counts.sum()
    cells = expected >= 5
    stat = float((((counts - expected) ** 2) / expected)[cells].sum())
    return stat, int(cells.sum()) - 1


def chi_square_quantile(df: int, z: float = 3.29) -> float:
    """The Wilson-Hilferty approximation of the chi-square quantile at the normal quantile z (3.29: p = 0.9995)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_accept_draft_gives_every_token_the_targets_distribution():
    """The rule alone, g = 2 drafted tokens on V = 6: the first output token and, when the first draft was
    kept, the second, against p, over 6,000 draws (a wrong ratio, residual or bonus token is off by far)."""
    g = torch.Generator().manual_seed(0)
    Vs = 6
    p = torch.softmax(2 * torch.randn(3, Vs, generator=g), -1)
    q = torch.softmax(2 * torch.randn(2, Vs, generator=g), -1)
    first, second, third = torch.zeros(Vs), torch.zeros(Vs), torch.zeros(Vs)
    draws = 6000
    for _ in range(draws):
        draft = torch.stack([torch.multinomial(q[0], 1, generator=g)[0], torch.multinomial(q[1], 1, generator=g)[0]])
        n, token = accept_draft(p, q, draft, g)
        out = draft[:n].tolist() + [token]
        first[out[0]] += 1
        if n >= 1:
            second[out[1]] += 1
        if n == 2:
            third[out[2]] += 1
    for name, counts, probs in (("first", first, p[0]), ("second", second, p[1]), ("bonus", third, p[2])):
        stat, df = chi_square(counts, probs)
        assert stat < chi_square_quantile(df), (f"{name} token: chi-square {stat:.1f} on {df} df; counts "
                                               f"{counts.tolist()} vs p {[round(float(x), 3) for x in probs]}")


@pytest.mark.slow
def test_speculative_sampling_draws_the_targets_joint_distribution():
    """End to end on a vocabulary of 5: two tokens after a prompt (gamma 3: the first drafted and checked,
    the second the residual or the bonus), 1,200 runs, against the target's exact P(x1, x2)."""
    Vs = 5
    target = gpt(4, 1, vocab=Vs, n_embd=16)
    # a perturbed copy: sum min(p, q) is about 0.56 here, so both the kept and the rejected branch occur
    # (an independently drawn draft can agree with the target almost never, whatever the init order)
    draft = perturb(copy.deepcopy(target), scale=0.3, seed=6)
    prompt = torch.tensor([[1, 3]])
    with torch.no_grad():
        p1 = torch.softmax(target(prompt).logits[0, -1], -1)
        both = torch.cat([prompt.repeat(Vs, 1), torch.arange(Vs)[:, None]], dim=1)
        p2 = torch.softmax(target(both).logits[:, -1], -1)  # (Vs, Vs): P(x2 | x1)
    joint = (p1[:, None] * p2).reshape(-1)
    counts = torch.zeros(Vs * Vs)
    g = torch.Generator().manual_seed(1)
    runs, kept = 1200, 0
    for _ in range(runs):
        out = target.generate(prompt, 2, do_sample=True, assistant_model=draft, num_assistant_tokens=3,
                              generator=g, return_dict_in_generate=True)
        x1, x2 = out.sequences[0, 2:].tolist()
        counts[x1 * Vs + x2] += 1
        kept += out.accepted_tokens
    stat, df = chi_square(counts, joint)
    assert stat < chi_square_quantile(df), f"chi-square {stat:.1f} on {df} df: the tokens are not the target's"
    assert 0.1 < kept / runs < 0.95, f"{kept} of {runs} first drafts kept: the test must see both branches"


def test_probabilities_are_one_hot_when_greedy_and_filtered_when_sampling():
    z = torch.tensor([[0.5, 2.0, -1.0, 1.0]])
    assert probabilities(z, GenerationConfig()).tolist() == [[0.0, 1.0, 0.0, 0.0]]
    p = probabilities(z, GenerationConfig(do_sample=True, top_k=2, temperature=0.5))
    expected = torch.softmax(torch.tensor([-math.inf, 4.0, -math.inf, 2.0]), -1)
    assert torch.allclose(p[0], expected), p


def test_assistant_model_bad_input_is_one_line_each():
    target = gpt(1, 2)
    prompt = torch.tensor([[3, 4]])
    cases = [
        (dict(assistant_model=gpt(2, 1, vocab=V + 1)), "vocabulary"),
        (dict(assistant_model=gpt(2, 1).to("meta")), "assistant_model is on meta"),
        (dict(assistant_model=gpt(2, 1), num_beams=2), "num_beams"),
        (dict(assistant_model=gpt(2, 1), do_sample=True, num_beams=2), "sampling with beams"),
        (dict(assistant_model=gpt(2, 1), num_assistant_tokens=0), "num_assistant_tokens"),
        (dict(assistant_model=gpt(2, 1, block=8)), "block_size"),
    ]
    for kwargs, words in cases:
        with pytest.raises(UserError, match=words) as info:
            target.generate(prompt, 10, **kwargs)
        assert "\n" not in str(info.value), str(info.value)
    with pytest.raises(UserError, match="one sequence"):
        target.generate(torch.tensor([[3, 4], [5, 6]]), 10, assistant_model=gpt(2, 1))
    with pytest.raises(UserError, match="GPT decoders"):
        from minit5 import T5Config, T5ForConditionalGeneration
        T5ForConditionalGeneration(T5Config(vocab_size=V, d_model=16, d_kv=4, d_ff=16, num_layers=1,
                                            num_heads=2)).generate(prompt, assistant_model=target)


@pytest.mark.slow
def test_the_speculative_benchmark_runs_the_four_ways_on_the_same_weights(tmp_path):
    """bench/speculative.py on two tiny random GPTs: transformers' copies give our logits, all four ways the same tokens."""
    from bench import speculative
    from common.text.char import CharTokenizer
    tokenizer = CharTokenizer.from_text("ROMEO: to be or not to be\n")
    for name, layers in (("target", 2), ("draft", 1)):
        model = gpt(len(name), layers, vocab=len(tokenizer), n_embd=16)
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    ours = GPT.from_pretrained(tmp_path / "target").eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        err = (speculative.to_transformers(ours)(ids).logits - ours(ids).logits).abs().max().item()
    assert err < 1e-5, f"transformers' copy differs from our GPT by {err:.2e}"
    result = speculative.run(str(tmp_path / "target"), str(tmp_path / "draft"), new_tokens=12, gamma=3, repeats=1)
    assert all(result["same_tokens_as_ours_plain"].values()), result["same_tokens_as_ours_plain"]
    assert 0 <= result["acceptance_rate"] <= 1 and result["target_forwards"] >= 12 / 4
