"""What minibert.quantize and minigpt.quantize share: read a float model folder, quantize it to int8
(common/nn/quantization.py), write a folder that from_pretrained loads (config.json's
`quantization_config`, int8 weights + float32 scales in model.safetensors) with the same tokenizer.

    parser = quantize_parser(prog, description, default_skip)
    opts = parser.parse_args(argv)
    quantize_folder(model_class, opts, prog)
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.cli.training import FLAG_NOTE
from common.errors import CheckpointError, ConfigError
from common.hub.config import CONFIG_NAME
from common.hub.pretrained import WEIGHTS_NAME, resolve_model_folder
from common.nn.quantization import is_quantized, quantize_model
from common.text.auto import load_tokenizer


def quantize_parser(prog: str, description: str, default_skip: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False, description=description, epilog=FLAG_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model_name_or_path", "--model-name-or-path", required=True,
        help="The float model folder (config.json, weights, tokenizer).")
    add("--output_dir", "--output-dir", required=True, help="The int8 folder to write.")
    add("--modules_to_not_convert", "--modules-to-not-convert", default=default_skip,
        help="Comma-separated module names kept in float (a full name or its last part; "
             "default: %(default)s). Tied weights always stay in float.")
    add("--no_quantize_embeddings", "--no-quantize-embeddings", action="store_true",
        help="Keep the embedding tables in float (by default each row is int8 with its own scale).")
    add("--overwrite_output_dir", "--overwrite-output-dir", action="store_true",
        help="Replace a model already saved in --output_dir.")
    return parser


def folder_size(folder) -> int:
    """Bytes of the weights file(s) of a folder."""
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin"))


def quantize_folder(model_class, opts: argparse.Namespace, prog: str):
    """Load, quantize, save; prints the size before and after. Returns the quantized model."""
    source = resolve_model_folder(opts.model_name_or_path)
    out = Path(opts.output_dir)
    if out.exists() and out.resolve() == source.resolve():
        raise ConfigError(f"--output_dir {out} is the input folder; write the int8 model to another folder")
    if (out / CONFIG_NAME).exists() and not opts.overwrite_output_dir:
        raise CheckpointError(f"{out} already holds a model ({CONFIG_NAME}); pass --overwrite_output_dir "
                              "to replace it, or choose another --output_dir")
    config = model_class.config_class.from_pretrained(source)
    if config.extra.get("quantization_config"):
        raise ConfigError(f"{source} is already quantized (config.json has a quantization_config); "
                          "quantize the float model it was made from")
    model = model_class.from_pretrained(source)
    if is_quantized(model):  # a folder quantized without our config key would also end here
        raise ConfigError(f"{source} is already quantized; quantize the float model it was made from")
    tokenizer = load_tokenizer(source)
    skip = [name.strip() for name in opts.modules_to_not_convert.split(",") if name.strip()]
    model.config.extra["quantization_config"] = quantize_model(
        model, skip, quantize_embeddings=not opts.no_quantize_embeddings)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    before, after = folder_size(source), (out / WEIGHTS_NAME).stat().st_size
    kept = model.config.extra["quantization_config"]["modules_to_not_convert"]
    print(f"{prog}: {source} ({before / 2**20:.1f} MiB) -> {out} ({after / 2**20:.1f} MiB, "
          f"{before / after:.2f}x smaller); kept in float: {', '.join(kept) or 'nothing'}", file=sys.stderr)
    return model
