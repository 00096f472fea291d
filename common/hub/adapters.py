"""LoRA adapters as folders, in peft's format, so that peft loads ours and we load peft's:

    adapter_config.json        peft's LoraConfig fields (peft_type "LORA", r, lora_alpha, lora_dropout,
                               target_modules, modules_to_save, base_model_name_or_path, ...)
    adapter_model.safetensors  only the adapter: base_model.model.<path>.lora_A.weight (r, in),
                               base_model.model.<path>.lora_B.weight (out, r), and every parameter of
                               the modules_to_save, base_model.model.<module>.<name>

The frozen base weights are not in the folder (that is the point: a few hundred kB instead of the
whole model); `from_pretrained_with_adapter` loads the base model named by base_model_name_or_path
and then the adapter. Our tools also leave config.json beside it (the task's labels, say), which
peft ignores. The math is common/nn/lora.py.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from common.errors import CheckpointError, write_then_rename
from common.hub.config import CONFIG_NAME
from common.hub.pretrained import _save_safetensors, load_state_dict, load_state_dict_file
from common.nn.lora import LoraConfig, LoRALinear, inject_lora, merge_and_unload, module_matches

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModel.base_model (LoraModel) .model (the wrapped model)

# peft fields for features this LoRA does not have: a saved value other than this default would
# change the numbers, so loading refuses it. (fan_in_fan_out is not among them: it says how the BASE
# weight is stored, GPT-2's Conv1D (in, out); our Linears hold every weight as (out, in), and A, B
# have the same shapes either way.)
UNSUPPORTED_PEFT_FIELDS = {"use_dora": False, "use_rslora": False, "lora_bias": False,
                           "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {},
                           "exclude_modules": None, "layer_replication": None, "target_parameters": None,
                           "trainable_token_indices": None}


def adapter_state_dict(model: nn.Module, config: LoraConfig) -> dict[str, torch.Tensor]:
    """The adapter's tensors under peft's saved names (see the module docstring)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = module.lora_A.weight
            out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = module.lora_B.weight
        elif name and module_matches(name, config.modules_to_save):
            for param_name, param in module.named_parameters():
                out[f"{PEFT_PREFIX}{name}.{param_name}"] = param
    return {k: v.detach().contiguous().cpu() for k, v in out.items()}


def adapter_config_dict(config: LoraConfig) -> dict:
    """adapter_config.json: our fields plus the peft defaults that say "plain LoRA"."""
    return {"peft_type": "LORA", "r": config.r, "lora_alpha": config.lora_alpha,
            "lora_dropout": config.lora_dropout, "target_modules": config.target_modules,
            "modules_to_save": config.modules_to_save, "bias": config.bias, "task_type": config.task_type,
            "base_model_name_or_path": config.base_model_name_or_path, "inference_mode": True,
            "init_lora_weights": True, "layers_pattern": None, "fan_in_fan_out": False, **UNSUPPORTED_PEFT_FIELDS}


def save_adapter(model: nn.Module, config: LoraConfig, folder) -> None:
    """Write adapter_config.json + adapter_model.safetensors, each to a temporary file renamed into
    place only when both are complete. Merged layers are refused: their A, B are also inside W."""
    if any(m.merged for m in model.modules() if isinstance(m, LoRALinear)):
        raise CheckpointError("save_adapter: the LoRA layers are merged into the weights; unmerge them first")
    os.makedirs(folder, exist_ok=True)
    weights, config_path = os.path.join(folder, ADAPTER_WEIGHTS_NAME), os.path.join(folder, ADAPTER_CONFIG_NAME)
    tmp_weights, tmp_config = f"{weights}.tmp-{os.getpid()}", f"{config_path}.tmp-{os.getpid()}"
    tensors, text = adapter_state_dict(model, config), json.dumps(adapter_config_dict(config), indent=2) + "\n"

    def write():
        _save_safetensors(tensors, tmp_weights)
        Path(tmp_config).write_text(text, encoding="utf-8")
    write_then_rename([(tmp_weights, weights), (tmp_config, config_path)], write)


def is_adapter_folder(folder) -> bool:
    return (Path(folder) / ADAPTER_CONFIG_NAME).is_file()


def read_adapter_config(folder) -> LoraConfig:
    """LoraConfig from folder/adapter_config.json (ours or peft's); features we lack are refused."""
    path = Path(folder) / ADAPTER_CONFIG_NAME
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not readable as JSON ({e}); save the adapter again") from None
    if d.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{path}: peft_type is {d.get('peft_type')!r}; only LORA adapters load here")
    for key, default in UNSUPPORTED_PEFT_FIELDS.items():
        if d.get(key, default) not in (default, None, {}, []):
            raise CheckpointError(f"{path}: {key} = {d[key]!r} is not supported by this LoRA "
                                  f"(only {key} = {default!r}); train a plain LoRA adapter")
    fields = ("r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save", "bias", "task_type",
              "base_model_name_or_path")
    try:
        return LoraConfig(**{k: d[k] for k in fields if k in d})
    except Exception as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_adapter(model: nn.Module, folder, config: Optional[LoraConfig] = None) -> LoraConfig:
    """Inject LoRA layers as folder/adapter_config.json says and load their weights (and the
    modules_to_save). Every adapter tensor must find its place and every LoRA layer its tensors."""
    config = config or read_adapter_config(folder)
    inject_lora(model, config)
    path = Path(folder) / ADAPTER_WEIGHTS_NAME
    saved = load_state_dict_file(path)
    expected = adapter_state_dict(model, config)
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the adapter does not fit this model: {len(missing)} tensors missing "
            f"(e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]}); was it trained on "
            f"another model than {type(model).__name__}?")
    own = dict(model.named_parameters())
    with torch.no_grad():
        for key, tensor in saved.items():
            name = key[len(PEFT_PREFIX):]
            param = own[name]
            if param.shape != tensor.shape:
                raise CheckpointError(f"{path}: {key} has shape {tuple(tensor.shape)} but the model expects "
                                      f"{tuple(param.shape)}; the adapter belongs to another configuration")
            param.copy_(tensor)
    return config


def resolve_base_model(folder, config: LoraConfig) -> Path:
    """base_model_name_or_path as written, else relative to the adapter folder."""
    base = config.base_model_name_or_path
    if not base:
        raise CheckpointError(f"{Path(folder) / ADAPTER_CONFIG_NAME}: base_model_name_or_path is empty; "
                              "pass the base model folder explicitly (base_model=...)")
    for candidate in (Path(base), Path(folder) / base):
        if candidate.is_dir():
            return candidate
    raise CheckpointError(f"{Path(folder) / ADAPTER_CONFIG_NAME}: the base model {base!r} is not a folder "
                          "here; copy it, or pass its folder explicitly (base_model=...)")


def from_pretrained_with_adapter(model_class, folder, base_model=None, merge: bool = False):
    """The base model (base_model, else the adapter's base_model_name_or_path) with the adapter of
    `folder` on top, in eval mode. config.json in the adapter folder, when present, overrides the
    base's (a task head's labels). merge=True folds B A into W and removes the LoRA layers."""
    folder = Path(folder)
    config = read_adapter_config(folder)
    base = Path(base_model) if base_model is not None else resolve_base_model(folder, config)
    if not (folder / CONFIG_NAME).is_file():
        model = model_class.from_pretrained(base)
    else:
        # The tuned model may differ from the base where the adapter carries the weights in full: a new
        # classifier, or an embedding grown by a chat template's tokens (modules_to_save).
        model = model_class(model_class.config_class.from_pretrained(folder))
        state_dict = model_class.convert_state_dict(load_state_dict(base), model.config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # checked below against what the adapter provides
            missing, _ = model.load_pretrained_state_dict(state_dict, source=str(base), ignore_mismatched_sizes=True)
        own = model.state_dict()
        mismatched = [k for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        provided = {k[len(PEFT_PREFIX):] for k in load_state_dict_file(folder / ADAPTER_WEIGHTS_NAME)}
        tied = set(getattr(model, "_tied_weights_keys", ()))  # copies of a provided weight
        absent = [k for k in missing + mismatched if k not in provided and k not in tied]
        if absent:
            raise CheckpointError(f"{folder}: {len(absent)} weights are neither in the base model {base} nor in "
                                  f"the adapter (e.g. {absent[0]}); is {base} the model the adapter was trained on?")
    load_adapter(model, folder, config)
    if merge:
        merge_and_unload(model)
    model.eval()
    return model
