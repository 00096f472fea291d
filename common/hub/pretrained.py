"""save_pretrained / from_pretrained: a model folder is config.json + model.safetensors
(+ the tokenizer's files). Hugging Face folders load too (model.safetensors, a sharded
model.safetensors.index.json, or pytorch_model.bin read with weights_only=True).

Safety and durability:
- weights are written to a temporary file and renamed (os.replace is atomic), so a crash during a
  save never leaves a half-written file under the real name;
- nothing pickled is ever executed: safetensors, or torch.load(weights_only=True), which refuses
  pickles that carry code.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from common.hub.config import CONFIG_NAME
from common.errors import CheckpointError, UserError, write_then_rename
from common.nn.checkpointing import checkpointing_granularity

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"


def atomic_save_file(tensors: dict[str, torch.Tensor], path) -> None:
    """Write a safetensors file under a temporary name, then rename it into place.

    A failed write (a full disk, a file size limit) removes the temporary file, leaves any
    previous file under `path` untouched, and raises CheckpointError naming the file.
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    write_then_rename([(tmp, path)], lambda: _save_safetensors(tensors, tmp))


def _save_safetensors(tensors: dict[str, torch.Tensor], path: str) -> None:
    from safetensors.torch import save

    # Serialised in memory, then written by Python: a full disk is then an OSError with its errno
    # (safetensors' own writer reports it as a SafetensorError without one).
    write_bytes(path, save(tensors, metadata={"format": "pt"}))


def save_torch_file(obj, path) -> None:
    """torch.save for plain data (optimizer and RNG states). Serialised in memory first because
    torch's file writer turns a full disk into a RuntimeError ("unexpected pos ..."); written by
    Python, a failed write is an OSError naming the reason (No space left on device)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def write_bytes(path, data) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # a full disk can also show up only when the data reaches it


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (`module.` from DDP, `_orig_mod.` from torch.compile) and give
    tensors that share memory (tied weights) their own contiguous copy, as safetensors requires."""
    out, seen = {}, set()
    for key, tensor in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        key = key.replace("._orig_mod.", ".").replace(".module.", ".")
        t = tensor.detach()
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        t = t.clone() if ptr in seen else t
        seen.add(ptr)
        out[key] = t.contiguous().cpu()
    return out


def resolve_model_folder(name_or_path) -> Path:
    """A local folder, or a hub name (`bert-base-uncased`, `org/name`) found in the local
    Hugging Face cache. Nothing is downloaded."""
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; pass the model FOLDER that contains it")
    name = os.fspath(name_or_path)
    hub = Path(os.environ.get("HF_HUB_CACHE") or
               Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    snapshots = hub / ("models--" + name.replace("/", "--")) / "snapshots"
    if snapshots.is_dir():
        candidates = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        for c in candidates:
            if (c / CONFIG_NAME).exists():
                return c
    raise CheckpointError(
        f"model folder not found: {name!r}. Nothing is downloaded at run time: pass a local folder "
        f"(config.json + model.safetensors), or put the model in the Hugging Face cache ({hub}) "
        "on a machine with a network first."
    )


def torch_load_safely(path, map_location="cpu"):
    """torch.load(weights_only=True): tensors, numbers, strings, lists and dicts only. A pickle that
    would call a function or build another object while loading is refused before anything runs
    (CheckpointError naming the file and what it would have called)."""
    path = os.fspath(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        called = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = (f"unpickling it would call {called.group(1)}" if called else
                "it is not a plain pickle of tensors (or it is corrupted)")
        raise CheckpointError(
            f"{path}: refused to load: {what}. Loads never execute pickled code; if you trust the "
            "file, convert it to safetensors with a trusted tool, else delete it") from None
    except (RuntimeError, EOFError, ValueError) as e:
        reason = str(e).split(".")[0].strip()
        raise CheckpointError(f"{path}: truncated or corrupted weights file ({reason}); save it again "
                              "or restore it from a good copy") from None


def load_state_dict_file(path) -> dict[str, torch.Tensor]:
    """Read one weights file (.safetensors, or a torch pickle via torch_load_safely)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is a folder" if os.path.isdir(path) else "does not exist"
        raise CheckpointError(f"weights file {path} {what}; save the model again with save_pretrained")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CheckpointError(
                f"{path}: truncated or corrupted safetensors file ({e}); save the model again "
                "or restore the file from a good copy"
            ) from None
    state = torch_load_safely(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict), found "
                              f"{type(state).__name__}; save model.state_dict(), not the model")
    return state


def load_state_dict(folder) -> dict[str, torch.Tensor]:
    """All weights of a model folder: model.safetensors, its sharded index, or pytorch_model.bin."""
    folder = Path(folder)
    if (folder / WEIGHTS_NAME).exists():
        return load_state_dict_file(folder / WEIGHTS_NAME)
    if (folder / WEIGHTS_INDEX_NAME).exists():
        index_path = folder / WEIGHTS_INDEX_NAME
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index_path}: not a safetensors index ({type(e).__name__}: {e}); "
                                  'expected {"weight_map": {weight name: shard file}}') from None
        state = {}
        for shard in shards:
            if not (folder / shard).is_file():
                raise CheckpointError(f"{index_path} lists the shard {shard}, which is not in {folder}; "
                                      "copy every shard of the model")
            state.update(load_state_dict_file(folder / shard))
        return state
    if (folder / PT_WEIGHTS_NAME).exists():
        return load_state_dict_file(folder / PT_WEIGHTS_NAME)
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise CheckpointError(
        f"no weights in {folder}: expected {WEIGHTS_NAME} (or {PT_WEIGHTS_NAME}); "
        f"the folder holds {present or 'nothing'}. Was the model saved with save_pretrained?"
    )


def check_tokenizer_fits_model(tokenizer, vocab_size: int, where: str = "the model") -> None:
    """A tokenizer whose ids reach past the embedding table would fail deep inside the model
    (an index error); say so up front. len(tokenizer) < vocab_size is fine (padded tables)."""
    if len(tokenizer) > vocab_size:
        raise CheckpointError(
            f"the tokenizer has {len(tokenizer)} tokens but {where} has vocab_size {vocab_size} embeddings; "
            "use the tokenizer saved with the model (same folder), or build the model with "
            f"vocab_size >= {len(tokenizer)}")


def check_token_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """Every id in [0, vocab_size), else one UserError line (a bad id would be a bare IndexError in the
    embedding). One aminmax per forward; skipped inside torch.compile, where reading the values back
    would split the graph."""
    if not input_ids.numel() or torch.compiler.is_compiling():
        return
    low, high = (int(v) for v in torch.aminmax(input_ids))
    if low < 0 or high >= vocab_size:
        raise UserError(
            f"input_ids holds token id {low if low < 0 else high}, outside the model's vocabulary "
            f"[0, vocab_size={vocab_size}); the tokenizer does not match the model: use the tokenizer "
            "saved with the model (same folder), or a model whose vocab_size covers the tokenizer")


def rename_legacy_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old TensorFlow-converted BERT checkpoints call LayerNorm parameters gamma/beta."""
    out = {}
    for k, v in state_dict.items():
        if k.endswith(".gamma"):
            k = k[: -len(".gamma")] + ".weight"
        elif k.endswith(".beta"):
            k = k[: -len(".beta")] + ".bias"
        out[k] = v
    return out


class PreTrainedModel(nn.Module):
    """Base of every model: save_pretrained / from_pretrained and weight tying.

    Subclasses set `config_class`, `base_model_prefix` (e.g. "bert": a head model keeps its
    encoder under `bert.`, a bare BertModel has no prefix), `_tied_weights_keys` (keys that are
    copies of another parameter and may be absent from a checkpoint), and may override
    `convert_state_dict` to import foreign layouts (e.g. GPT-2's Conv1D weights).
    """

    config_class = None
    base_model_prefix = ""
    _tied_weights_keys: tuple[str, ...] = ()
    supports_gradient_checkpointing = False  # a family whose stacks call common/nn/checkpointing.py sets True

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Optional[dict] = None) -> None:
        """Recompute activations in the backward pass instead of keeping them (common/nn/checkpointing.py):
        every submodule with a `gradient_checkpointing` attribute gets the granularity; the block stacks
        act on "full", the attention layers on "selective".
        gradient_checkpointing_kwargs (transformers' argument): {"granularity": "full"} (the default,
        each block's input kept, the whole block recomputed) or {"granularity": "selective"} (all but
        the attention core kept, the core recomputed from Q, K, V)."""
        if not self.supports_gradient_checkpointing:
            raise UserError(f"{type(self).__name__} cannot recompute its blocks (gradient checkpointing); "
                            "train it without --gradient_checkpointing")
        try:
            granularity = checkpointing_granularity(gradient_checkpointing_kwargs)
        except ValueError as e:
            raise UserError(str(e)) from None
        self._set_gradient_checkpointing(granularity)

    def gradient_checkpointing_disable(self) -> None:
        self._set_gradient_checkpointing(False)

    def _set_gradient_checkpointing(self, value) -> None:
        """value: False (off), "full" or "selective"; run_block and run_attention read it."""
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = value

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    def tie_weights(self) -> None:
        """Make tied parameters share memory again (after loading); models override."""

    def init_weights(self) -> None:
        """Initialise every parameter; models override."""

    def num_parameters(self, trainable_only: bool = False) -> int:
        params = {id(p): p for p in self.parameters() if p.requires_grad or not trainable_only}
        return sum(p.numel() for p in params.values())

    def prune_heads(self, heads_to_prune: dict[int, list[int]]) -> None:
        """Remove attention heads physically, {layer: [heads]} numbered as built (transformers' meaning;
        common/nn/pruning.py). config.json's `pruned_heads` records them, so from_pretrained rebuilds
        the same shapes."""
        from common.nn.pruning import prune_heads, pruned_heads_of

        prune_heads(self, heads_to_prune)
        self.config.extra["pruned_heads"] = pruned_heads_of(self)

    def save_pretrained(self, folder, state_dict: Optional[dict[str, torch.Tensor]] = None) -> None:
        """config.json + model.safetensors, both written to temporary files first and renamed only
        when both are complete: a full disk keeps the previous pair, never a mix of old and new.
        state_dict: the weights to write instead of self.state_dict() (transformers' argument; a
        sharded model passes its gathered full weights)."""
        os.makedirs(folder, exist_ok=True)
        weights = os.path.join(folder, WEIGHTS_NAME)
        config = os.path.join(folder, CONFIG_NAME)
        tmp_weights, tmp_config = f"{weights}.tmp-{os.getpid()}", f"{config}.tmp-{os.getpid()}"

        def write():
            _save_safetensors(clean_state_dict(self.state_dict() if state_dict is None else state_dict), tmp_weights)
            self.config.write_json(tmp_config)
        write_then_rename([(tmp_weights, weights), (tmp_config, config)], write)

    @classmethod
    def convert_state_dict(cls, state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
        """Hook for importing a foreign checkpoint layout; identity by default."""
        return state_dict

    def _align_prefix(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add or strip `base_model_prefix.` so a bare encoder loads into a head model and back."""
        p = self.base_model_prefix + "."
        if not self.base_model_prefix:
            return state_dict
        model_keys = self.state_dict().keys()
        model_has_prefix = any(k.startswith(p) for k in model_keys)
        ckpt_has_prefix = any(k.startswith(p) for k in state_dict)
        if model_has_prefix and not ckpt_has_prefix:
            base_keys = {k[len(p):] for k in model_keys if k.startswith(p)}
            return {(p + k if k in base_keys else k): v for k, v in state_dict.items()}
        if not model_has_prefix and ckpt_has_prefix:
            return {(k[len(p):] if k.startswith(p) else k): v for k, v in state_dict.items()}
        return state_dict

    def load_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor], source: str = "checkpoint",
                                   ignore_mismatched_sizes: bool = False) -> tuple[list[str], list[str]]:
        """Load weights by name. Shape mismatches are errors (or re-initialised with
        ignore_mismatched_sizes); missing weights stay initialised and are listed in one warning;
        unexpected ones are listed. Returns (missing, unexpected)."""
        state_dict = self._align_prefix(rename_legacy_keys(state_dict))
        own = self.state_dict()
        mismatched = [k for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        if mismatched and not ignore_mismatched_sizes:
            k = mismatched[0]
            raise CheckpointError(
                f"{source}: weight {k} has shape {tuple(state_dict[k].shape)} but this model expects "
                f"{tuple(own[k].shape)} ({len(mismatched)} mismatched in all). The checkpoint belongs "
                "to a different configuration; check vocab_size / hidden_size / num_labels, or pass "
                "ignore_mismatched_sizes=True to re-initialise those weights."
            )
        for k in mismatched:
            del state_dict[k]
        result = self.load_state_dict(state_dict, strict=False)
        tied = set(self._tied_weights_keys)
        missing = [k for k in result.missing_keys if k not in tied]
        unexpected = list(result.unexpected_keys)
        self.tie_weights()
        if missing or mismatched:
            warnings.warn(
                f"{source}: {len(missing) + len(mismatched)} weights were not in the checkpoint and are "
                f"newly initialised (train them before use): {', '.join((missing + mismatched)[:8])}"
                + (" ..." if len(missing) + len(mismatched) > 8 else ""), stacklevel=3)
        if unexpected:
            warnings.warn(
                f"{source}: {len(unexpected)} weights in the checkpoint are not used by "
                f"{type(self).__name__}: {', '.join(unexpected[:8])}" + (" ..." if len(unexpected) > 8 else ""),
                stacklevel=3)
        return missing, unexpected

    @classmethod
    def from_pretrained(cls, name_or_path, config=None, ignore_mismatched_sizes: bool = False,
                        **config_overrides):
        """Build the model from folder/config.json and load folder's weights (see module doc).
        A LoRA adapter folder (adapter_config.json, no model weights) loads its base model and
        then the adapter (common/hub/adapters.py)."""
        folder = resolve_model_folder(name_or_path)
        if (folder / "adapter_config.json").is_file() and not any(
                (folder / name).exists() for name in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, PT_WEIGHTS_NAME)):
            from common.hub.adapters import from_pretrained_with_adapter  # it imports this module

            return from_pretrained_with_adapter(cls, folder)
        if config is None:
            config = cls.config_class.from_pretrained(folder, **config_overrides)
        model = cls(config)
        prepare_compressed_model(model, config)
        state_dict = cls.convert_state_dict(load_state_dict(folder), config)
        model.load_pretrained_state_dict(state_dict, source=str(folder),
                                         ignore_mismatched_sizes=ignore_mismatched_sizes)
        model.eval()
        return model


def prepare_compressed_model(model: PreTrainedModel, config) -> None:
    """Give a freshly built model the shapes of a compressed folder before its weights load: the heads
    config.json's `pruned_heads` names are removed, and with a `quantization_config` (as transformers
    writes it) the int8 modules replace the float ones (common/nn/quantization.py)."""
    extra = getattr(config, "extra", {}) or {}
    if extra.get("pruned_heads"):
        model.prune_heads({int(layer): heads for layer, heads in extra["pruned_heads"].items()})
    if extra.get("quantization_config"):
        from common.nn.quantization import prepare_quantized_model

        prepare_quantized_model(model, extra["quantization_config"])
