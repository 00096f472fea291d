"""LoRA (common/nn/lora.py, common/hub/adapters.py) against peft, the test-only oracle.

The same PERTURBED random weights (every parameter moved by 0.1 N(0, 1), then the LoRA factors
randomised too, so B != 0) go into transformers' model + peft and into ours, in float32:
    BERT (minibert <-> BertForSequenceClassification), target_modules query, value + the classifier
        trained in full (modules_to_save)
    GPT (minigpt <-> GPT2LMHeadModel), target_modules c_fc, mlp.c_proj: GPT-2 keeps the MLP in
        Conv1D layers under the same names as ours (peft adapts Conv1D with the same A, B shapes);
        its attention is one fused c_attn where ours has query/key/value, so attention targets
        have no counterpart there and are compared on BERT only.
Checked: outputs, gradients of A and B, saved keys and config, peft loads ours and we load
peft's, merged == unmerged, frozen weights get no gradient and do not move after a step.
"""
import json
import math
import warnings

import pytest
import torch
import torch.nn as nn

import minibert
from common.errors import ConfigError
from common.hub.adapters import (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, from_pretrained_with_adapter,
                                 read_adapter_config, save_adapter)
from common.nn.dropout import dropout
from common.nn.lora import (LoraConfig, LoRALinear, inject_lora, merge_and_unload, merge_lora, module_matches,
                            trainable_parameters, unmerge_lora)
from common.train.optim import create_optimizer
from minigpt import GPT

transformers = pytest.importorskip("transformers", reason="transformers (test-only oracle) is not installed")
peft = pytest.importorskip("peft", reason="peft (test-only oracle) is not installed")

TOL = 1e-5
BERT_TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=24, type_vocab_size=2, num_labels=3)
GPT_TINY = dict(n_layer=2, n_head=4, n_embd=32, n_positions=24, vocab_size=61, bos_token_id=1, eos_token_id=1)
BERT_LORA = dict(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"])
GPT_LORA = dict(r=4, lora_alpha=12, target_modules=["c_fc", "mlp.c_proj"])


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def perturb_lora_factors(model, seed):
    """Random A and B in every LoRA layer (B = 0 would hide every mistake in the update)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's Conv1D and transformers' deprecation notes
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_bert")
    config = transformers.BertConfig(**BERT_TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    perturb(transformers.BertForSequenceClassification(config), 1).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_gpt2")
    config = transformers.GPT2Config(**GPT_TINY, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    perturb(transformers.GPT2LMHeadModel(config), 2).save_pretrained(folder)
    return folder


def hf_bert(folder):
    model = quiet(transformers.BertForSequenceClassification.from_pretrained, folder, attn_implementation="eager")
    return model.eval()


def hf_gpt(folder):
    return quiet(transformers.GPT2LMHeadModel.from_pretrained, folder, attn_implementation="eager").eval()


def our_bert(folder, lora=BERT_LORA, seed=3):
    model = quiet(minibert.BertForSequenceClassification.from_pretrained, folder).eval()
    inject_lora(model, LoraConfig(**lora))
    perturb_lora_factors(model, seed)
    return model


def our_gpt(folder, lora=GPT_LORA, seed=4):
    model = quiet(GPT.from_pretrained, folder).eval()
    inject_lora(model, LoraConfig(**lora))
    perturb_lora_factors(model, seed)
    return model


def bert_batch():
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(1, 50, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return dict(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2, 1]))


def gpt_batch():
    ids = torch.randint(0, 61, (2, 12), generator=torch.Generator().manual_seed(6))
    return dict(input_ids=ids, labels=ids)


def peft_with_our_adapter(hf_model, ours, lora, folder):
    save_adapter(ours, LoraConfig(**lora), folder)
    return quiet(peft.PeftModel.from_pretrained, hf_model, folder, is_trainable=True).eval()


def lora_grads(model, prefix=""):
    """{module path: (dL/dA, dL/dB)} with peft's '.default' adapter names and prefix removed."""
    grads = {}
    for name, p in model.named_parameters():
        for factor in ("lora_A", "lora_B"):
            if f".{factor}." in name:
                path = name.split(f".{factor}.")[0].removeprefix(prefix)
                grads.setdefault(path, {})[factor] = p.grad
    return grads


def max_diff(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- the layer itself


def test_model_is_unchanged_at_step_0_because_B_starts_at_zero(bert_folder):
    base = quiet(minibert.BertForSequenceClassification.from_pretrained, bert_folder).eval()
    adapted = quiet(minibert.BertForSequenceClassification.from_pretrained, bert_folder).eval()
    inject_lora(adapted, LoraConfig(**BERT_LORA))
    batch = bert_batch()
    with torch.no_grad():
        diff = max_diff(base(**batch).logits, adapted(**batch).logits)
    assert diff == 0.0, f"a fresh adapter changed the logits by {diff:.2e}; B must start at 0"


def test_A_starts_kaiming_uniform_and_B_zero():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(400, 300), r=16, lora_alpha=16)
    bound = 1 / math.sqrt(400)  # kaiming-uniform with a = sqrt(5): sqrt(6 / ((1 + 5) in)) = 1 / sqrt(in)
    A = layer.lora_A.weight
    assert A.shape == (16, 400) and layer.lora_B.weight.shape == (300, 16)
    assert A.abs().max().item() <= bound, f"A reaches {A.abs().max().item():.4f} > bound {bound:.4f}"
    std, expected = A.std().item(), bound / math.sqrt(3)
    assert abs(std - expected) < 0.05 * expected, f"std(A) {std:.5f}, U(-b, b) has {expected:.5f}"
    assert torch.count_nonzero(layer.lora_B.weight) == 0, "B must start at zero"


def test_layer_computes_x_WT_plus_b_plus_scaled_dropout_x_AT_BT():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(6, 5), r=2, lora_alpha=6, lora_dropout=0.3).train()
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(4, 6)
    torch.manual_seed(7)
    y = layer(x)
    torch.manual_seed(7)
    x_dropped = dropout(x, 0.3, True)  # the same draw: dropout acts on x before A, never on the base path
    W, b, A, B = layer.base_layer.weight, layer.base_layer.bias, layer.lora_A.weight, layer.lora_B.weight
    expected = x @ W.T + b + (6 / 2) * x_dropped @ A.T @ B.T
    assert max_diff(y, expected) < 1e-6, f"differs from the formula by {max_diff(y, expected):.2e}"


def test_target_modules_select_the_same_modules_as_peft(bert_folder):
    """Suffix names and a full-match regex, as peft reads them."""
    for targets in (["query", "value"], ["attention.self.key", "dense"], r".*layer\.1\..*\.(query|key)"):
        hf = quiet(peft.get_peft_model, hf_bert(bert_folder), peft.LoraConfig(r=2, target_modules=targets))
        theirs = sorted(n.removeprefix("base_model.model.") for n, m in hf.named_modules()
                        if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
        ours = quiet(minibert.BertForSequenceClassification.from_pretrained, bert_folder)
        mine = sorted(inject_lora(ours, LoraConfig(r=2, target_modules=targets)))
        assert mine == theirs, f"target_modules {targets!r}: ours {mine} vs peft {theirs}"
    assert module_matches("a.b.query", ["query"]) and not module_matches("a.b.myquery", ["query"])


def test_target_modules_that_match_nothing_name_the_linear_layers():
    model = GPT(__import__("minigpt").GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=11))
    with pytest.raises(ConfigError, match="match no module.*c_fc") as info:
        inject_lora(model, LoraConfig(target_modules=["c_attn"]))
    assert "\n" not in str(info.value), str(info.value)


# ---------------------------------------------------------------- parity with peft


def test_bert_outputs_and_gradients_of_A_and_B_equal_peft(bert_folder, tmp_path):
    ours = our_bert(bert_folder)
    theirs = peft_with_our_adapter(hf_bert(bert_folder), ours, BERT_LORA, tmp_path)
    batch = bert_batch()
    ours_out, their_out = ours(**batch), theirs(**batch)
    diff = max_diff(ours_out.logits, their_out.logits)
    assert diff <= TOL, f"logits differ from peft's by {diff:.2e}"
    ours_out.loss.backward()
    their_out.loss.backward()
    mine, peft_grads = lora_grads(ours), lora_grads(theirs, "base_model.model.")
    assert sorted(mine) == sorted(peft_grads) and len(mine) == 4, (sorted(mine), sorted(peft_grads))
    for path in mine:
        for factor in ("lora_A", "lora_B"):
            d = max_diff(mine[path][factor], peft_grads[path][factor])
            assert d <= TOL, f"d loss / d {path}.{factor} differs from peft's by {d:.2e}"
    head = max_diff(ours.classifier.weight.grad,
                    theirs.base_model.model.classifier.modules_to_save["default"].weight.grad)
    assert head <= TOL, f"the classifier (modules_to_save) gradient differs by {head:.2e}"


def test_gpt_outputs_and_gradients_of_A_and_B_equal_peft(gpt_folder, tmp_path):
    ours = our_gpt(gpt_folder)
    theirs = peft_with_our_adapter(hf_gpt(gpt_folder), ours, GPT_LORA, tmp_path)
    batch = gpt_batch()
    ours_out, their_out = ours(**batch), theirs(**batch)
    diff = max_diff(ours_out.logits, their_out.logits)
    assert diff <= TOL, f"logits differ from peft's by {diff:.2e}"
    assert abs(ours_out.loss.item() - their_out.loss.item()) <= TOL
    ours_out.loss.backward()
    their_out.loss.backward()
    mine, peft_grads = lora_grads(ours), lora_grads(theirs, "base_model.model.")
    assert sorted(mine) == sorted(peft_grads) and len(mine) == 4, (sorted(mine), sorted(peft_grads))
    for path in mine:
        for factor in ("lora_A", "lora_B"):
            d = max_diff(mine[path][factor], peft_grads[path][factor])
            assert d <= TOL, f"d loss / d {path}.{factor} differs from peft's by {d:.2e}"


def test_saved_keys_and_config_equal_peft(bert_folder, tmp_path):
    ours = our_bert(bert_folder)
    save_adapter(ours, LoraConfig(**BERT_LORA), tmp_path / "ours")
    theirs = quiet(peft.get_peft_model, hf_bert(bert_folder), peft.LoraConfig(**BERT_LORA))
    theirs.save_pretrained(tmp_path / "peft")
    from safetensors.torch import load_file

    our_keys = sorted(load_file(tmp_path / "ours" / ADAPTER_WEIGHTS_NAME))
    peft_keys = sorted(load_file(tmp_path / "peft" / ADAPTER_WEIGHTS_NAME))
    assert our_keys == peft_keys, f"ours {our_keys[:3]}... vs peft {peft_keys[:3]}..."
    assert "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight" in our_keys
    mine = json.loads((tmp_path / "ours" / ADAPTER_CONFIG_NAME).read_text())
    peft_config = json.loads((tmp_path / "peft" / ADAPTER_CONFIG_NAME).read_text())
    for key in ("peft_type", "r", "lora_alpha", "lora_dropout", "bias", "use_dora", "use_rslora"):
        assert mine[key] == peft_config[key], f"{key}: ours {mine[key]!r}, peft {peft_config[key]!r}"
    for key in ("target_modules", "modules_to_save"):
        assert sorted(mine[key]) == sorted(peft_config[key]), f"{key}: {mine[key]} vs {peft_config[key]}"


def test_we_load_an_adapter_saved_by_peft(gpt_folder, tmp_path):
    theirs = quiet(peft.get_peft_model, hf_gpt(gpt_folder), peft.LoraConfig(**GPT_LORA))
    perturb_lora_factors(theirs, 8)
    theirs.save_pretrained(tmp_path)
    config = read_adapter_config(tmp_path)
    assert (config.r, config.lora_alpha, sorted(config.target_modules)) == (4, 12, ["c_fc", "mlp.c_proj"])
    ours = quiet(from_pretrained_with_adapter, GPT, tmp_path, base_model=gpt_folder)
    batch = gpt_batch()
    with torch.no_grad():
        diff = max_diff(ours(**batch).logits, theirs.eval()(**batch).logits)
    assert diff <= TOL, f"our model with peft's adapter differs from peft's by {diff:.2e}"


def test_from_pretrained_of_an_adapter_folder_loads_base_then_adapter(gpt_folder, tmp_path):
    ours = our_gpt(gpt_folder)
    save_adapter(ours, LoraConfig(**GPT_LORA, base_model_name_or_path=str(gpt_folder)), tmp_path)
    loaded = quiet(GPT.from_pretrained, tmp_path)
    batch = gpt_batch()
    with torch.no_grad():
        diff = max_diff(loaded(**batch).logits, ours(**batch).logits)
    assert diff == 0.0, f"reloaded adapter changes the logits by {diff:.2e}"


def test_peft_adapter_with_dora_is_refused_in_one_line(tmp_path):
    (tmp_path / ADAPTER_CONFIG_NAME).write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q"],
                                                            "use_dora": True}))
    with pytest.raises(Exception, match="use_dora") as info:
        read_adapter_config(tmp_path)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- merging and freezing


def test_merged_model_equals_unmerged_and_unmerge_restores_W(bert_folder):
    model = our_bert(bert_folder)
    batch = bert_batch()
    W = model.bert.encoder.layer[0].attention.self.query.base_layer.weight.clone()
    with torch.no_grad():
        unmerged = model(**batch).logits
        merge_lora(model)
        merged = model(**batch).logits
        unmerge_lora(model)
        again = model(**batch).logits
    assert max_diff(merged, unmerged) <= TOL, f"merged differs by {max_diff(merged, unmerged):.2e}"
    back = model.bert.encoder.layer[0].attention.self.query.base_layer.weight
    assert max_diff(back, W) <= 1e-6 and max_diff(again, unmerged) <= TOL
    plain = merge_and_unload(model)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    with torch.no_grad():
        d = max_diff(plain(**batch).logits, unmerged)
    assert d <= TOL, f"merge_and_unload differs by {d:.2e}"
    assert "bert.encoder.layer.0.attention.self.query.weight" in plain.state_dict(), "base keys again"


def test_frozen_weights_get_no_gradient_and_do_not_change_after_a_step(bert_folder):
    model = our_bert(bert_folder).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = create_optimizer(model, 1e-2, weight_decay=0.1)
    model(**bert_batch()).loss.backward()
    optimizer.step()
    for name, p in model.named_parameters():
        trainable = "lora_" in name or name.startswith("classifier.")
        assert p.requires_grad == trainable, f"{name}: requires_grad {p.requires_grad}"
        if trainable:
            assert not torch.equal(p, before[name]), f"{name} is trainable but did not move"
        else:
            assert p.grad is None, f"frozen {name} received a gradient"
            assert torch.equal(p, before[name]), f"frozen {name} changed after a step"
    trainable, total = trainable_parameters(model)
    lora = 2 * 2 * (4 * 32 + 32 * 4)  # 2 layers x (query, value) x (A + B)
    head = 32 * 3 + 3
    assert trainable == lora + head, f"trainable {trainable}, expected {lora} LoRA + {head} head"

