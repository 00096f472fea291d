"""python -m minigpt.dpo: preference tuning (DPO, Rafailov et al. 2023) of an instruction-tuned GPT.

    python -m minigpt.dpo --model_name_or_path out/sft \\
        --train_file ../shared/data/instructions/instruction-data-with-preference.json \\
        --output_dir out/dpo --beta 0.1 --max_time 300

Each record is a prompt x with a chosen answer y_w and a rejected one y_l (common/data/preferences.py:
rasbt's instruction/input/chosen/rejected or TRL's prompt/chosen/rejected), rendered with the chat
template of minigpt.sft. The loss is common/nn/dpo.py's

    L = -log sigmoid(beta ((log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))))

where log pi(y|x) sums the log-probabilities of the answer's tokens only. The reference pi_ref is the
model of --model_name_or_path as loaded: its log-probabilities of every pair are computed ONCE,
before training (in eval mode, so no dropout), and stored with the pair; pi_ref cannot drift because
nothing of it is kept. With --lora_r they are computed before the adapters are injected: the
reference is the base without adapters, the policy is base + B A.

Logs (log.jsonl) and eval_results.json use TRL's names: rewards/chosen = beta (log pi(y_w) -
log pi_ref(y_w)) averaged over pairs, rewards/rejected likewise, rewards/margins their difference,
rewards/accuracies the fraction of pairs with rewards/chosen > rewards/rejected, logps/chosen and
logps/rejected the policy's log-probabilities; eval_ prefixed on the validation set. The implicit
rewards are 0 at the start (pi = pi_ref), so eval_results.json also holds, before and after,
eval_preference_accuracy: the fraction of pairs where log pi(y_w) > log pi(y_l), the model's own
preference.

Without --validation_file the last --validation_split_percentage percent of the records are held out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from common.cli.training import (FLAG_NOTE, add_lora_flags, add_training_flags, apply_lora_flags, train_and_save,
                                 training_arguments, write_json)
from common.data.preferences import DataCollatorForPreference, PreferenceDataset, load_preference_file
from common.errors import ConfigError, run_cli
from common.nn.dpo import dpo_loss, sequence_log_probs
from common.nn.lora import merge_and_unload
from common.train.device import move_to_device, pick_device, set_seed
from common.train.trainer import Trainer
from minigpt.sft import answer, load_model, split_records

RECIPE = dict(learning_rate=5e-5, per_device_train_batch_size=8, per_device_eval_batch_size=16, warmup_steps=10,
              lr_scheduler_type="linear", weight_decay=0.0, num_train_epochs=1.0, logging_steps=10,
              save_strategy="no", remove_unused_columns=False)
STATS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
         "logps/rejected")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt.dpo", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Preference-tune an instruction-tuned GPT with DPO on (prompt, chosen, rejected) records.",
        epilog="Example:\n  python -m minigpt.dpo --model_name_or_path out/sft --train_file "
               "instruction-data-with-preference.json --output_dir out/dpo --beta 0.1\n" + FLAG_NOTE)
    group = parser.add_argument_group("model and data")
    add = group.add_argument
    add("--model_name_or_path", "--model-name-or-path", required=True,
        help="A GPT folder written by minigpt.sft (it also serves as the frozen reference).")
    add("--train_file", "--train-file", required=True,
        help="Preference records: instruction/input/chosen/rejected or prompt/chosen/rejected (.json or .jsonl).")
    add("--validation_file", "--validation-file", default=None, help="Records for eval_results.json.")
    add("--validation_split_percentage", "--validation-split-percentage", type=float, default=10.0,
        help="Without --validation_file: hold out the last this percent of the records (default: %(default)s).")
    add("--beta", type=float, default=0.1,
        help="How strongly the policy is tied to the reference (default: %(default)s).")
    add("--max_seq_length", "--max-seq-length", type=int, default=None,
        help="Longest prompt + answer in tokens (default and maximum: the model's block_size).")
    add("--drop_long_examples", "--drop-long-examples", action="store_true",
        help="Skip pairs longer than --max_seq_length (counted in one line) instead of stopping.")
    add("--drop_identical_pairs", "--drop-identical-pairs", action="store_true",
        help="Skip records whose chosen and rejected answers are the same text (counted in one line) instead of "
             "stopping at the first.")
    add("--max_train_samples", "--max-train-samples", type=int, default=None, help="Use the first N records only.")
    add("--encoding", default="utf-8", help="Encoding of the data files (default: %(default)s).")
    add_training_flags(parser, RECIPE)
    add_lora_flags(parser, "query,key,value,out_proj,c_fc,c_proj")
    parser.set_defaults(from_scratch=False)
    return parser


def pair_log_probs(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(y_w | x), log pi(y_l | x)), each (B,), from a (2B, T) batch of DataCollatorForPreference."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (2B, T, V)
    logps = sequence_log_probs(logits, batch["preference_labels"])  # (2B,)
    return logps.chunk(2)


@torch.no_grad()
def reference_log_probs(model, dataset: PreferenceDataset, batch_size: int, device) -> None:
    """Compute log pi_ref(y_w|x), log pi_ref(y_l|x) of every pair with `model` (eval mode) and store them."""
    collate = DataCollatorForPreference(pad_token_id=0)
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for start in range(0, len(dataset), batch_size):
        batch = move_to_device(collate(dataset.examples[start:start + batch_size]), device)
        w, l = pair_log_probs(model, batch)
        chosen.append(w.float().cpu())
        rejected.append(l.float().cpu())
    model.train(was_training)
    dataset.add_reference(torch.cat(chosen), torch.cat(rejected))


def dpo_statistics(policy_w, policy_l, reference_w, reference_l, beta: float) -> dict:
    """TRL's per-batch numbers (means over the B pairs) and the summed counts for exact averages."""
    chosen, rejected = beta * (policy_w - reference_w), beta * (policy_l - reference_l)  # implicit rewards (B,)
    return {"rewards/chosen": chosen, "rewards/rejected": rejected,
            "rewards/accuracies": (chosen > rejected).float(), "rewards/margins": chosen - rejected,
            "logps/chosen": policy_w, "logps/rejected": policy_l,
            "preference_accuracy": (policy_w > policy_l).float()}


class DPOTrainer(Trainer):
    """The Trainer with the DPO loss: batches are DataCollatorForPreference's, the loss is dpo_loss on
    the answers' log-probabilities against the stored reference ones. Logs add TRL's rewards/* and
    logps/* (means over the pairs since the last log line); evaluate() returns eval_loss and the
    same numbers prefixed eval_."""

    def __init__(self, model, args, beta: float, **kwargs):
        super().__init__(model, args, **kwargs)
        self.beta = beta
        self._train_stats: dict[str, list] = {}

    def _loss(self, model, batch: dict) -> torch.Tensor:
        policy_w, policy_l = pair_log_probs(model, batch)
        reference_w, reference_l = batch["reference_chosen_logps"], batch["reference_rejected_logps"]
        for key, value in dpo_statistics(policy_w.detach(), policy_l.detach(), reference_w, reference_l,
                                         self.beta).items():
            self._train_stats.setdefault(key, []).append(value.float().cpu())
        return dpo_loss(policy_w, policy_l, reference_w, reference_l, self.beta)

    def log(self, logs: dict) -> None:
        if "loss" in logs and self._train_stats:
            logs = {**logs, **{key: torch.cat(values).mean().item() for key, values in self._train_stats.items()
                               if key in STATS}}
            self._train_stats = {}
        super().log(logs)

    @torch.no_grad()
    def dpo_metrics(self, dataset, prefix: str = "eval") -> dict:
        """{prefix_loss, prefix_rewards/..., prefix_logps/..., prefix_preference_accuracy} over a dataset
        (exact means over its pairs); nothing is logged."""
        model, was_training = self.model, self.model.training
        model.eval()
        losses, stats = [], {}
        for batch in self.eval_dataloader(dataset):
            batch = move_to_device(batch, self.ctx.device)
            policy_w, policy_l = pair_log_probs(model, batch)
            reference_w, reference_l = batch["reference_chosen_logps"], batch["reference_rejected_logps"]
            losses.append(dpo_loss(policy_w, policy_l, reference_w, reference_l, self.beta).cpu() * len(policy_w))
            for key, value in dpo_statistics(policy_w, policy_l, reference_w, reference_l, self.beta).items():
                stats.setdefault(key, []).append(value.float().cpu())
        model.train(was_training)
        return {f"{prefix}_loss": torch.stack(losses).sum().item() / len(dataset),
                **{f"{prefix}_{key}": torch.cat(values).mean().item() for key, values in stats.items()}}

    def evaluate(self, eval_dataset=None, metric_key_prefix: str = "eval") -> dict:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ConfigError("eval_dataset: evaluate() needs a dataset (DPOTrainer(..., eval_dataset=...))")
        metrics = self.dpo_metrics(dataset, metric_key_prefix)
        self.log(metrics)
        for callback in self.callbacks:
            callback.on_evaluate(self, metrics)
        return metrics


def build_datasets(opts, tokenizer, max_length):
    def load(path, encoding):
        records = load_preference_file(path, encoding, opts.drop_identical_pairs)
        if records.dropped:
            print(f"minigpt.dpo: --drop_identical_pairs: skipped {records.dropped} records of {path} whose chosen and "
                  "rejected answers are the same", file=sys.stderr)
        return records

    train_records, eval_records = split_records(opts, load(opts.train_file, opts.encoding), load)
    train_set = PreferenceDataset(tokenizer, train_records, max_length, opts.drop_long_examples)
    eval_set = PreferenceDataset(tokenizer, eval_records, max_length, opts.drop_long_examples) if eval_records else None
    dropped = train_set.dropped + (eval_set.dropped if eval_set else 0)
    if dropped:
        print(f"minigpt.dpo: --drop_long_examples: skipped {dropped} pairs longer than {max_length} tokens",
              file=sys.stderr)
    if len(train_set) == 0:
        raise ConfigError(f"{opts.train_file}: no preference pair fits in {max_length} tokens")
    return train_set, eval_set if eval_set is not None and len(eval_set) else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = build_parser().parse_args(argv)
    args = training_arguments(opts)
    if opts.beta <= 0:
        raise ConfigError(f"--beta must be > 0 (e.g. 0.1), got {opts.beta}")
    set_seed(args.seed)
    model, tokenizer, added = load_model(opts, args.seed)
    if added:
        raise ConfigError(f"{opts.model_name_or_path} is not instruction-tuned (no chat_template.json); DPO starts "
                          f"from an SFT model: python -m minigpt.sft --model_name_or_path {opts.model_name_or_path} ...")
    max_length = opts.max_seq_length or model.config.block_size
    if max_length > model.config.block_size:
        raise ConfigError(f"--max_seq_length {max_length} exceeds the model's block_size {model.config.block_size}")
    train_set, eval_set = build_datasets(opts, tokenizer, max_length)
    device = pick_device(args.use_cpu)
    model.to(device)
    for dataset in filter(None, (train_set, eval_set)):  # pi_ref: the model as loaded, before any adapter
        reference_log_probs(model, dataset, args.per_device_eval_batch_size, device)
    print(f"minigpt.dpo: GPT of {model.num_parameters() / 1e6:.2f}M parameters, beta {opts.beta}; {len(train_set)} "
          f"training and {len(eval_set) if eval_set else 0} validation pairs, at most {max_length} tokens; reference "
          "log-probabilities computed", file=sys.stderr)
    opts.lora_modules_to_save = opts.lora_modules_to_save or ""
    lora = apply_lora_flags(model, opts, "minigpt.dpo", base_model_name_or_path=opts.model_name_or_path)
    trainer = DPOTrainer(model, args, opts.beta, train_dataset=train_set, eval_dataset=eval_set,
                         tokenizer=tokenizer, data_collator=DataCollatorForPreference(tokenizer.pad_token_id))
    before = trainer.dpo_metrics(eval_set) if eval_set is not None else {}
    result = train_and_save(trainer, args.output_dir, lora, train_pairs=len(train_set), beta=opts.beta)
    if result is None:
        return 0
    output_dir = Path(args.output_dir)
    if eval_set is not None:
        after = trainer.evaluate()
        results = {**{k: v for k, v in after.items() if k.startswith("eval_")},
                   "init_eval_preference_accuracy": before["eval_preference_accuracy"],
                   "init_eval_logps/chosen": before["eval_logps/chosen"],
                   "init_eval_logps/rejected": before["eval_logps/rejected"],
                   "eval_pairs": len(eval_set), "train_steps": result.global_step,
                   "train_runtime": result.metrics["train_runtime"]}
        write_json(output_dir / "eval_results.json", results)
        print(f"eval: rewards/accuracies {after['eval_rewards/accuracies']:.3f}  rewards/margins "
              f"{after['eval_rewards/margins']:.4f}  preference accuracy {before['eval_preference_accuracy']:.3f} -> "
              f"{after['eval_preference_accuracy']:.3f}")
        merge_and_unload(model)
        prompt, _, _ = eval_set.prompts[0]
        print(f"sample: {prompt[-1]['content'][:200]!r} -> {answer(model.eval(), tokenizer, prompt)!r}")
    print(f"model and tokenizer saved to {output_dir}; chat with: python -m minigpt.chat --model_name_or_path "
          f"{output_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
