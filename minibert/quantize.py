"""python -m minibert.quantize: int8 post-training quantization of a BERT folder.

    python -m minibert.quantize --model_name_or_path out/sst2 --output_dir out/sst2-int8

Every Linear of the encoder becomes an Int8Linear (int8 weights, one float32 scale per output row;
each token's activations quantized at run time) and every embedding table stores int8 rows with a
scale each (common/nn/quantization.py); the task head (`classifier`, `qa_outputs`) stays in float.
The folder loads like any other: BertForSequenceClassification.from_pretrained("out/sst2-int8"), and
`use_int8_kernel(model)` switches to torch's int8 matrix product. The head is read from the weights:
classifier + pooler = sequence classification, classifier alone = token classification, qa_outputs
= question answering, cls.* = the pretraining heads, none = the bare encoder.
"""
from __future__ import annotations

from typing import Optional, Sequence

from common.cli.quantize import quantize_folder, quantize_parser
from common.errors import run_cli
from common.hub.pretrained import load_state_dict, resolve_model_folder
import minibert

PROG = "python -m minibert.quantize"


def model_class_of(folder):
    """The minibert class whose weights the folder holds. Read from the weights, not config.json's
    `architectures`: a fine-tuned Hugging Face folder often still names the class it started from."""
    keys = set(load_state_dict(folder))
    has = lambda part: any(part in k for k in keys)  # noqa: E731
    if has("qa_outputs."):
        return minibert.BertForQuestionAnswering
    if has("classifier."):
        return (minibert.BertForSequenceClassification if has("pooler.")
                else minibert.BertForTokenClassification)
    if has("cls.seq_relationship."):
        return minibert.BertForPreTraining
    if has("cls.predictions."):
        return minibert.BertForMaskedLM
    return minibert.BertModel


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = quantize_parser(PROG, "Quantize a BERT folder to int8 (weights per output channel, activations "
                                   "per token at run time); the task head stays in float.", "classifier,qa_outputs")
    opts = parser.parse_args(argv)
    quantize_folder(model_class_of(resolve_model_folder(opts.model_name_or_path)), opts, PROG)
    return 0


if __name__ == "__main__":
    run_cli(main)
