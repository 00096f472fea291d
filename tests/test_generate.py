"""minigpt.generate: the KV cache changes the speed, never the tokens; left padding changes
nothing; eos stops a row; the sampling filters keep exactly the tokens their formulas say."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import UserError
from minigpt import GPT, GPTConfig, generate
from common.nn.lora import LoraConfig, inject_lora, merge_and_unload
from common.nn.sampling import next_token, top_k_filter, top_p_filter

BLOCK = 16
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, vocab_size=40)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # a wider init than GPT-2's 0.02 gives peaked, varied next-token distributions to test against
    return GPT(GPTConfig(**TINY, initializer_range=0.2)).eval()


def left_pad(prompts, pad_id=0):
    """List of 1-D prompts -> (input_ids, attention_mask), padded on the LEFT."""
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, T - len(p):] = p
        mask[i, T - len(p):] = 1
    return ids, mask


SAMPLING = {
    "greedy": dict(do_sample=False),
    "temperature": dict(do_sample=True, temperature=0.7, seed=1),
    "top_k": dict(do_sample=True, top_k=5, seed=2),
    "top_p": dict(do_sample=True, top_p=0.8, seed=3),
    "all_filters": dict(do_sample=True, temperature=1.3, top_k=10, top_p=0.9, seed=4),
}


@pytest.mark.parametrize("name", SAMPLING)
def test_kv_cache_gives_exactly_the_tokens_of_recomputing(model, name):
    # 3 + 30 tokens > block_size 16: the cache is used up to 16, then the window slides
    ids, mask = left_pad([torch.tensor([5, 6, 7]), torch.tensor([9, 3, 1, 4, 8])])
    kwargs = dict(attention_mask=mask, **SAMPLING[name])
    cached = generate(model, ids, 30, use_cache=True, **kwargs)
    recomputed = generate(model, ids, 30, use_cache=False, **kwargs)
    assert cached.shape == (2, 5 + 30), f"shape {tuple(cached.shape)}"
    assert torch.equal(cached, recomputed), f"cache {cached.tolist()}\nno cache {recomputed.tolist()}"


@pytest.mark.parametrize("prompt_length, extra_steps, packed", [
    (5, -1, False),  # one decode step fewer than MIN_STEPS_TO_PACK
    (5, 0, True),  # exactly MIN_STEPS_TO_PACK decode steps
    (BLOCK - 6, 20, False),  # many new tokens, but the cache is full after 6 decode steps
])
def test_short_and_long_generations_give_the_tokens_of_recomputing(model, monkeypatch, prompt_length,
                                                                 extra_steps, packed):
    """generate packs the weights only when at least MIN_STEPS_TO_PACK single-token steps will use
    the cache; otherwise it runs GPT.forward with the cache. Either way the tokens are those of
    recomputing everything."""
    from minigpt.decode_step import DecodeWeights
    from minigpt.generate import MIN_STEPS_TO_PACK

    packs = []
    pack = DecodeWeights.from_model
    monkeypatch.setattr(DecodeWeights, "from_model", lambda m: packs.append(1) or pack(m))
    new = 1 + MIN_STEPS_TO_PACK + extra_steps  # the prefill gives the first new token
    ids, mask = left_pad([torch.arange(1, prompt_length + 1), torch.tensor([9, 3, 1])])
    cached = generate(model, ids, new, attention_mask=mask, **SAMPLING["top_k"])
    recomputed = generate(model, ids, new, attention_mask=mask, use_cache=False, **SAMPLING["top_k"])
    assert torch.equal(cached, recomputed), f"{new} new tokens: cache {cached.tolist()} vs {recomputed.tolist()}"
    assert len(packs) == int(packed), (f"prompt {prompt_length}, {new} new tokens: weights packed {len(packs)} "
                                       f"times, expected {int(packed)}")


def test_decode_steps_feed_one_token_while_the_context_fits(model):
    fed = []
    hook = model.transformer.wte.register_forward_hook(lambda m, args, out: fed.append(args[0].shape[1]))
    try:
        generate(model, torch.tensor([[1, 2, 3, 4, 5]]), 15)
    finally:
        hook.remove()
    # prefill 5 tokens, then 1 token per step up to 16 in context, then the cropped window of 16
    expected = [5] + [1] * (BLOCK - 5) + [BLOCK] * (15 - 1 - (BLOCK - 5))
    assert fed == expected, f"tokens fed per step {fed}, expected {expected}"


@pytest.mark.parametrize("use_cache", [True, False])
def test_left_padded_batch_equals_each_prompt_alone(model, use_cache):
    prompts = [torch.tensor([3, 1, 4]), torch.tensor([1, 5, 9, 2, 6, 5, 3]), torch.tensor([5, 8])]
    ids, mask = left_pad(prompts)
    batch = generate(model, ids, 20, attention_mask=mask, use_cache=use_cache)
    for i, p in enumerate(prompts):
        alone = generate(model, p[None], 20, use_cache=use_cache)[0, len(p):]
        assert torch.equal(batch[i, ids.size(1):], alone), (
            f"prompt {i}: batched {batch[i, ids.size(1):].tolist()} vs alone {alone.tolist()}")


def test_a_row_stops_at_eos_and_is_padded_afterwards(model):
    ids = torch.tensor([[1, 2, 3], [7, 8, 9]])
    free = generate(model, ids, 8)
    eos = free[0, 4].item()  # the second token row 0 generates becomes the end-of-sequence token
    stop = 3 + (free[0, 3:] == eos).nonzero()[0].item()  # where row 0 first emits it
    got = generate(model, ids, 8, eos_token_id=eos, pad_token_id=39)
    assert got[0, stop].item() == eos and (got[0, stop + 1:] == 39).all(), f"row 0: {got[0].tolist()}"
    row1_stop = (free[1, 3:] == eos).nonzero()
    end = 3 + row1_stop[0].item() + 1 if len(row1_stop) else got.size(1)
    assert torch.equal(got[1, :end], free[1, :end]), f"row 1 changed: {got[1].tolist()} vs {free[1].tolist()}"


def test_generation_ends_early_when_every_row_has_stopped(model):
    ids = torch.tensor([[1, 2, 3]])
    first = generate(model, ids, 1)[0, -1].item()
    got = generate(model, ids, 10, eos_token_id=first)
    assert got.tolist() == [[1, 2, 3, first]], f"expected to stop after eos={first}: {got.tolist()}"


def test_prompt_longer_than_block_size_is_cropped_to_its_last_block_size_tokens(model):
    prompt = torch.arange(1, 21)[None] % 40  # 20 tokens > block_size 16
    got = generate(model, prompt, 6)
    cropped = generate(model, prompt[:, -BLOCK:], 6)
    assert torch.equal(got[:, 20:], cropped[:, BLOCK:]), f"{got[:, 20:].tolist()} vs {cropped[:, BLOCK:].tolist()}"


def test_seed_makes_sampling_reproducible(model):
    ids = torch.tensor([[1, 2, 3]])
    a = generate(model, ids, 20, do_sample=True, seed=7)
    b = model.generate(ids, 20, do_sample=True, generator=torch.Generator().manual_seed(7))
    c = generate(model, ids, 20, do_sample=True, seed=8)
    assert torch.equal(a, b), f"same seed, different tokens: {a.tolist()} vs {b.tolist()}"
    assert not torch.equal(a, c), f"seeds 7 and 8 gave the same 20 tokens: {a.tolist()}"


def test_sampling_with_top_k_1_is_greedy(model):
    ids = torch.tensor([[4, 5, 6]])
    greedy = generate(model, ids, 20)
    sampled = generate(model, ids, 20, do_sample=True, top_k=1, seed=0)
    assert torch.equal(greedy, sampled), f"{greedy.tolist()} vs {sampled.tolist()}"


def test_generate_restores_training_mode_and_validates_arguments(model):
    model.train()
    generate(model, torch.tensor([[1, 2]]), 2)
    assert model.training, "generate must put the model back in training mode"
    model.eval()
    with pytest.raises(UserError, match="temperature"):
        generate(model, torch.tensor([[1, 2]]), 2, do_sample=True, temperature=0.0)
    with pytest.raises(UserError, match="input_ids"):
        generate(model, torch.tensor([1, 2]), 2)


# ----------------------------------------------------------------------------- filters

logits_rows = st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=2, max_size=30)


@settings(deadline=None, max_examples=40)
@given(values=logits_rows, k=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_top_k_never_emits_a_token_outside_the_k_largest(values, k, seed):
    logits = torch.tensor(values)
    kth = sorted(values, reverse=True)[min(k, len(values)) - 1]
    kept = {i for i, v in enumerate(values) if v >= kth}  # the k largest, and ties with the k-th
    filtered = top_k_filter(logits, k)
    assert {i for i in range(len(values)) if filtered[i] > float("-inf")} == kept
    draws = torch.multinomial(torch.softmax(filtered, -1), 200, replacement=True,
                              generator=torch.Generator().manual_seed(seed))
    outside = set(draws.tolist()) - kept
    assert not outside, f"sampled {outside}, kept set {sorted(kept)}"


@settings(deadline=None, max_examples=40)
@given(values=logits_rows, p=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_top_p_keeps_the_smallest_set_reaching_mass_p_and_samples_only_from_it(values, p, seed):
    logits = torch.tensor(values)
    probs = torch.softmax(logits, -1)
    filtered = top_p_filter(logits, p)
    kept = [i for i in range(len(values)) if filtered[i] > float("-inf")]
    kept_probs = sorted((probs[i].item() for i in kept), reverse=True)
    dropped_max = max((probs[i].item() for i in range(len(values)) if i not in kept), default=0.0)
    assert kept_probs[-1] >= dropped_max - 1e-7, "a dropped token is more likely than a kept one"
    mass = sum(kept_probs)
    assert mass >= p - 1e-5, f"kept mass {mass:.4f} < p = {p:.4f}"
    assert mass - kept_probs[-1] < p + 1e-5, f"without its least likely token the set still reaches p: {mass:.4f}"
    draws = torch.multinomial(torch.softmax(filtered, -1), 200, replacement=True,
                              generator=torch.Generator().manual_seed(seed))
    outside = set(draws.tolist()) - set(kept)
    assert not outside, f"sampled {outside}, kept set {kept}"


# ----------------------------------------------------------------------------- next_token's draws
# The filters inside next_token, checked by what it samples: N draws of one row of logits, each
# token's count within 5 binomial standard deviations of N q, q = the probabilities written out
# here independently (softmax of z / tau, then the top-k and top-p sets, renormalised).

SAMPLING_LOGITS = torch.tensor([2.0, 1.6, 1.1, 0.4, -0.3, -1.2, -2.0])
DRAWS = 20000


def expected_sampling_probabilities(z, temperature, top_k, top_p):
    probs = torch.softmax(z.double() / temperature, -1)
    order = sorted(range(len(z)), key=lambda i: -probs[i].item())
    keep = set(order[:top_k]) if top_k is not None else set(order)
    if top_p is not None:
        restricted = torch.tensor([probs[i].item() if i in keep else 0.0 for i in range(len(z))])
        restricted = restricted / restricted.sum()
        nucleus, mass = set(), 0.0
        for i in order:  # the most likely first, until the mass before a token reaches p
            if i in keep and mass < top_p:
                nucleus.add(i)
                mass += restricted[i].item()
        keep = nucleus
    q = torch.tensor([probs[i].item() if i in keep else 0.0 for i in range(len(z))], dtype=torch.float64)
    return q / q.sum()


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, None, None), (0.5, None, None), (2.0, None, None), (1.0, 3, None), (1.0, None, 0.7),
    (0.7, None, 0.8), (2.0, 4, 0.8), (1.0, 1, None),
], ids=["plain", "tau_0.5", "tau_2", "top_k_3", "top_p_0.7", "tau_0.7_top_p_0.8", "tau_2_top_k_4_top_p_0.8",
        "top_k_1"])
def test_next_token_sampling_frequencies_follow_the_renormalised_filtered_softmax(temperature, top_k, top_p):
    q = expected_sampling_probabilities(SAMPLING_LOGITS, temperature, top_k, top_p)
    logits = SAMPLING_LOGITS.expand(DRAWS, -1)
    draws = next_token(logits, True, temperature, top_k, top_p, torch.Generator().manual_seed(5))
    counts = torch.bincount(draws, minlength=len(SAMPLING_LOGITS)).double()
    expected = DRAWS * q
    bound = 5 * (DRAWS * q * (1 - q)).sqrt() + 1
    bad = [(i, int(counts[i]), round(expected[i].item(), 1)) for i in range(len(q))
           if (counts[i] - expected[i]).abs() > bound[i] or (q[i] == 0 and counts[i] > 0)]
    assert not bad, (f"tau={temperature}, top_k={top_k}, top_p={top_p}: (token, drawn, expected of "
                     f"{DRAWS}) outside 5 binomial sd: {bad}; q = {[round(v, 4) for v in q.tolist()]}")


def test_generate_leaves_the_weights_as_it_found_them(model):
    before = {name: (p.data_ptr(), p.stride(), p.clone()) for name, p in model.named_parameters()}
    generate(model, torch.tensor([[1, 2, 3]]), 5)
    for name, p in model.named_parameters():
        ptr, stride, value = before[name]
        assert (p.data_ptr(), p.stride()) == (ptr, stride), f"{name}: storage or strides changed"
        assert torch.equal(p, value), f"{name}: values changed"
    assert model.lm_head.weight is model.transformer.wte.weight, "weight tying lost"


def test_generated_ids_can_be_trained_on():
    model = GPT(GPTConfig(**TINY))
    ids = generate(model, torch.tensor([[1, 2, 3]]), 5)
    loss = model(ids, labels=ids).loss
    loss.backward()  # would fail if generate returned inference-mode tensors
    assert model.transformer.wte.weight.grad is not None, "no gradient reached the embeddings"


@pytest.mark.parametrize("targets", [["c_fc", "mlp.c_proj"], ["query", "key", "value", "out_proj"]])
def test_generate_with_unmerged_adapters_gives_the_tokens_of_the_merged_model(targets):
    """The packed fast decode path reads plain weights; with LoRA layers generate keeps the textbook
    path, so an unmerged adapter generates exactly what its merged model does."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=64, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    inject_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    with torch.no_grad():  # B = 0 would make the adapter invisible
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.3 * torch.randn_like(p))
    prompt = torch.randint(0, 50, (2, 5))
    with_adapters = generate(model, prompt, max_new_tokens=20)  # >= MIN_STEPS_TO_PACK steps
    merged = generate(merge_and_unload(model), prompt, max_new_tokens=20)  # now the fast path
    assert torch.equal(with_adapters, merged), (
        f"unmerged adapters generate {with_adapters.tolist()}, the merged model {merged.tolist()}")
