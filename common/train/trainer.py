"""The one training loop, for pretraining and fine-tuning alike (what `transformers.Trainer.train()` does).

The model contract is small: `model(**batch)` returns an object with `.loss` (and `.logits` for
evaluation metrics and predict). One optimizer step is

    window  = the next gradient_accumulation_steps micro-batches (data order = f(seed, epoch))
    for each micro-batch i:  (L_i * n_i / sum_j n_j).backward()     n_i = label units (trainer_utils)
    g       = clip(g, max_grad_norm)                                 the norm is logged
    theta   = AdamW(theta, g, lr_t);  t = t + 1                      lr_t from the schedule (optim);
                                                                     --optim muon: common/train/muon.py

so the update equals one big batch even for token-level losses with unequal padding. Under
torchrun the model is wrapped in DistributedDataParallel (gradients averaged over processes; the
n_i are summed over processes too), each process reads its own shard, rank 0 logs and saves.
With --fsdp the model is sharded instead (common/train/fsdp.py: same updates, each process holding
1/W of the weights, gradients and optimizer state); saving gathers the full weights first, each
process saves its own optimizer shard, and resuming restores both.
With --gradient_checkpointing the model recomputes each block in the backward, or with
--gradient_checkpointing_kwargs '{"granularity": "selective"}' only each attention core
(common/nn/checkpointing.py).

Stopping: max_steps/epochs reached, `max_time` seconds used, Ctrl-C (finish the step, save,
print the resume flag), or a callback setting `trainer.should_stop`. A NaN/inf loss stops with
an error naming the step, before the bad update is applied and without saving it.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from common.train.device import (all_reduce, autocast_context, barrier, bf16_supported, move_to_device,
                           set_seed, setup_distributed)
from common.errors import ConfigError, UserError
from common.train.fsdp import check_fsdp_context, full_state_dict, full_tensor, is_sharded, shard_model
from common.train.optim import create_optimizer, get_scheduler
from common.train.columns import ColumnFilter, LOSS_KEYS, forward_arguments, no_loss_message, unused_columns
from common.train.checkpoints import (TrainerState, list_checkpoints, load_model_weights, load_training_state,
                                       remove_stale_temp_folders, resolve_resume_path, restore_rng_state,
                                       rotate_checkpoints, save_checkpoint, save_model_files)
from common.train.utils import (EvalPrediction, LogWindow, PredictionOutput, TrainOutput, count_tokens,
                                  default_data_collator, label_units, pad_and_concatenate, to_numpy)
from common.train.args import TrainingArguments

LOG_NAME = "log.jsonl"
# what save_pretrained / an adapter save leave in a folder: a model that a new run would overwrite
SAVED_MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                     "adapter_config.json", "adapter_model.safetensors")


class TrainingDivergedError(UserError):
    """The loss became NaN or infinite."""


class Trainer:
    def __init__(self, model: nn.Module, args: Optional[TrainingArguments] = None, *,
                 train_dataset: Optional[Dataset] = None, eval_dataset: Optional[Dataset] = None,
                 data_collator: Optional[Callable] = None, compute_metrics: Optional[Callable] = None,
                 tokenizer=None, processing_class=None, callbacks: Optional[list] = None):
        self.args = args if args is not None else TrainingArguments()
        self.ctx = setup_distributed(self.args.use_cpu)
        if self.args.bf16 and (reason := bf16_supported(self.ctx.device)):
            raise ConfigError(f"bf16: {reason}; train without --bf16")
        self.model = model.to(self.ctx.device)  # the bare module: what is saved and evaluated
        # a causal LM scores labels[:, 1:] only (the shift is inside its loss): count those units
        self.shifts_labels = bool(getattr(model, "shifts_labels", False))
        self.tokenizer = processing_class if processing_class is not None else tokenizer
        self.data_collator = data_collator or functools.partial(
            default_data_collator, pad_token_id=getattr(self.tokenizer, "pad_token_id", None))
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.compute_metrics = compute_metrics
        self.callbacks = list(callbacks or [])
        self.state = TrainerState()
        self.optimizer = self.lr_scheduler = None
        self.should_stop = False  # a callback may set it; training then ends after the step, with a checkpoint
        self._interrupted = False
        self._reported_columns: set = set()

    # ---------------------------------------------------------------- training
    def train(self, resume_from_checkpoint=None) -> TrainOutput:
        """Train from scratch, or continue from a checkpoint (a folder, or True / 'latest')."""
        args, ctx = self.args, self.ctx
        if self.train_dataset is None:
            raise ConfigError("train_dataset: Trainer.train() needs a training dataset "
                              "(Trainer(..., train_dataset=...))")
        if args.eval_strategy != "no" and self.eval_dataset is None:
            raise ConfigError(f"eval_strategy: {args.eval_strategy!r} needs an eval_dataset (Trainer(..., "
                              "eval_dataset=...)); or pass --eval_strategy no")
        if resume_from_checkpoint is None:
            resume_from_checkpoint = args.resume_from_checkpoint
        resume = resolve_resume_path(resume_from_checkpoint, args.output_dir)
        self._prepare_output_dir(resume)
        self._report_unused_columns(self.train_dataset)
        set_seed(args.seed)
        self.should_stop = self._interrupted = False

        batches_per_epoch = self._batches_per_epoch()
        steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
        max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
        if args.fsdp:  # before the optimizer: fully_shard replaces the parameters by their shards
            check_fsdp_context(ctx.is_distributed)
            shard_model(self.model)
        self.optimizer = create_optimizer(self.model, args.learning_rate, args.weight_decay,
                                          (args.adam_beta1, args.adam_beta2), args.adam_epsilon, optim=args.optim,
                                          muon_learning_rate=args.muon_learning_rate, muon_momentum=args.muon_momentum)
        self.lr_scheduler = get_scheduler(args.lr_scheduler_type, self.optimizer,
                                          args.warmup_steps_for(max_steps), max_steps, args.scheduler_kwargs)
        self.state = TrainerState(max_steps=max_steps, steps_per_epoch=steps_per_epoch,
                                  train_batch_size=args.per_device_train_batch_size,
                                  gradient_accumulation_steps=args.gradient_accumulation_steps,
                                  world_size=ctx.world_size, seed=args.seed)
        if resume is not None:
            self._resume(resume, max_steps, steps_per_epoch)
        self._write_log_file()
        model = self._wrap_model()
        model.train()
        self._last_saved_step = self.state.global_step if resume is not None else -1
        for callback in self.callbacks:
            callback.on_train_begin(self)

        start, first_step, stop_reason = time.monotonic(), self.state.global_step, None
        loss_sum, window_log = 0.0, LogWindow()
        bar = tqdm(total=max_steps, initial=self.state.global_step, desc="train", dynamic_ncols=True,
                   disable=args.disable_tqdm or not ctx.is_main_process)
        with self._catch_sigint():
            windows = self._windows(batches_per_epoch)
            while self.state.global_step < max_steps and stop_reason is None:
                step_start = time.monotonic()
                window = next(windows)
                step_loss, grad_norm, tokens, learning_rate = self._optimizer_step(model, window)
                epoch_ended = self._advance(len(window), batches_per_epoch, tokens)
                loss_sum += step_loss
                window_log.add(step_loss, tokens, time.monotonic() - step_start)
                bar.update(1)
                for callback in self.callbacks:
                    callback.on_step_end(self)
                stop_reason = self._stop_reason(start)
                finished = self.state.global_step >= max_steps
                if self.state.global_step % args.logging_steps == 0 or finished or stop_reason:
                    logs = {**window_log.flush(), "learning_rate": learning_rate, "grad_norm": grad_norm}
                    self.log(logs)
                    bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{learning_rate:.2e}",
                                    tok_s=f"{logs['tokens_per_second']:.0f}")
                self._maybe_evaluate_and_save(epoch_ended, finished, stop_reason)
        bar.close()
        return self._finish_training(stop_reason, loss_sum, first_step, start)

    def _optimizer_step(self, model: nn.Module, window: list[dict]) -> tuple[float, float, float, float]:
        """Forward/backward every micro-batch of the window, clip, step. Returns (loss of the window
        averaged over all processes, grad norm, tokens read by all processes, learning rate used)."""
        ctx, args = self.ctx, self.args
        units = [label_units(batch, self.shifts_labels) for batch in window]
        total_units = all_reduce(torch.tensor(float(sum(units)), device=ctx.device), ctx).item()
        ddp = model if isinstance(model, DistributedDataParallel) else getattr(model, "_orig_mod", None)
        local_loss, tokens = torch.zeros((), device=ctx.device), 0
        for i, batch in enumerate(window):
            # DDP averages gradients over processes, so each share is multiplied by world_size
            share = units[i] * ctx.world_size / max(total_units, 1.0)
            last = i == len(window) - 1
            sync = ddp.no_sync() if isinstance(ddp, DistributedDataParallel) and not last else contextlib.nullcontext()
            if is_sharded(model):  # FSDP reduce-scatters the gradients after the last micro-batch only
                model.set_requires_gradient_sync(last)
            with sync:
                batch = move_to_device(batch, ctx.device)
                with autocast_context(ctx.device, args.bf16):
                    loss = self._loss(model, batch)
                (loss * share).backward()
            local_loss += loss.detach().float() * (units[i] / max(total_units, 1.0))
            tokens += count_tokens(batch)
        max_norm = args.max_grad_norm if args.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        grad_norm = full_tensor(grad_norm)  # a sharded model's norm is a DTensor
        shared = all_reduce(torch.stack([local_loss, torch.tensor(float(tokens), device=ctx.device)]), ctx)
        step_loss, global_tokens = shared.tolist()
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm.item())):
            self.optimizer.zero_grad(set_to_none=True)
            previous = list_checkpoints(self.args.output_dir)
            raise TrainingDivergedError(
                f"the loss became {step_loss} (grad norm {grad_norm.item()}) at step {self.state.global_step + 1} "
                f"(epoch {self.state.epoch:.2f}); this update was not applied and nothing was saved. "
                + (f"Last good checkpoint: {previous[-1]}. " if previous else "")
                + "Try a lower --learning_rate or more --warmup_steps, and keep --max_grad_norm > 0")
        learning_rate = self.lr_scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss, grad_norm.item(), global_tokens, learning_rate

    def _advance(self, micro_batches: int, batches_per_epoch: int, tokens: float) -> bool:
        """Move the step counter and the data position past one window; True if it ended an epoch."""
        state = self.state
        state.global_step += 1
        state.num_input_tokens_seen += int(tokens)
        state.micro_batches_in_epoch += micro_batches
        epoch_ended = state.micro_batches_in_epoch >= batches_per_epoch
        if epoch_ended:
            state.epoch_index, state.micro_batches_in_epoch = state.epoch_index + 1, 0
        state.epoch = state.epoch_index + state.micro_batches_in_epoch / batches_per_epoch
        return epoch_ended

    def _loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        accepted = forward_arguments(self.model)
        labels = [k for k in batch if k in LOSS_KEYS]
        if accepted is not None and not set(batch) <= accepted:
            if labels and not set(labels) <= accepted:
                raise ConfigError(no_loss_message(self.model, batch))
            raise ConfigError(f"{type(self.model).__name__}.forward takes no {sorted(set(batch) - accepted)} "
                              f"(it takes {sorted(accepted)}); drop those keys in the dataset or the "
                              "data_collator (remove_unused_columns=True drops dataset columns before collation)")
        loss = getattr(model(**batch), "loss", None)
        if loss is None and labels:
            raise ConfigError(no_loss_message(self.model, batch))
        if loss is None:
            raise ConfigError(f"the model returned no .loss for a batch with keys {sorted(batch)}; "
                              "training needs labels in the batch (check the dataset or the data_collator)")
        return loss

    def _stop_reason(self, start: float) -> Optional[str]:
        """Why to stop after this step, if at all; the same answer on every process (Ctrl-C and the
        clock reach processes at different moments, so the signals are summed over processes)."""
        time_up = self.args.max_time is not None and time.monotonic() - start >= self.args.max_time
        signals = torch.tensor([float(self._interrupted), float(self.should_stop), float(time_up)],
                               device=self.ctx.device)
        interrupted, callback_stop, time_up = (all_reduce(signals, self.ctx) > 0).tolist()
        if interrupted:
            return "interrupted"
        if callback_stop:
            return "stopped by a callback"
        return "max_time" if time_up else None

    def _maybe_evaluate_and_save(self, epoch_ended: bool, finished: bool, stop_reason: Optional[str]) -> None:
        args, step = self.args, self.state.global_step

        def due(strategy: str, every: Optional[int], at_the_end: bool) -> bool:
            return strategy != "no" and (at_the_end or (strategy == "epoch" and epoch_ended)
                                         or (strategy == "steps" and step % every == 0))

        improved = False
        # Ctrl-C or a callback asked to stop now: skip the evaluation, but always save.
        if due(args.eval_strategy, args.eval_steps, finished or stop_reason == "max_time"):
            improved = self._track_best(self.evaluate())
        if (due(args.save_strategy, args.save_steps, finished) or stop_reason is not None) \
                and step != self._last_saved_step:
            self._save_checkpoint(improved)

    def _track_best(self, metrics: dict) -> bool:
        """Update state.best_metric from metric_for_best_model; True if this evaluation is the best so far."""
        key = self.args.best_metric_key
        if key is None:
            return False
        if key not in metrics:
            raise ConfigError(f"metric_for_best_model: {key!r} is not among the evaluation metrics "
                              f"{sorted(k for k in metrics if k.startswith('eval_'))}")
        value, best = metrics[key], self.state.best_metric
        better = best is None or (value > best if self.args.greater_is_better else value < best)
        if better:
            self.state.best_metric = value
        return better

    def _save_checkpoint(self, improved: bool) -> Path:
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        if improved:
            self.state.best_model_checkpoint = str(folder)
        path = save_checkpoint(self.args.output_dir, self.model, self.optimizer, self.lr_scheduler, self.state,
                               self.args, self.ctx, self.tokenizer, full_weights=self._full_weights())
        self._last_saved_step = self.state.global_step
        if self.ctx.is_main_process:
            rotate_checkpoints(self.args.output_dir, self.args.save_total_limit, self.state.best_model_checkpoint)
        barrier(self.ctx)
        for callback in self.callbacks:
            callback.on_save(self, str(path))
        return path

    def _finish_training(self, stop_reason: Optional[str], loss_sum: float, first_step: int,
                         start: float) -> TrainOutput:
        args, state = self.args, self.state
        if stop_reason is not None:
            newest = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self._print(f"training stopped at step {state.global_step}/{state.max_steps} ({stop_reason}); "
                        f"checkpoint saved to {newest}\nresume with: --resume_from_checkpoint {newest}")
        if args.load_best_model_at_end and state.best_model_checkpoint and Path(state.best_model_checkpoint).is_dir():
            load_model_weights(self.model, state.best_model_checkpoint)
            self._print(f"loaded the best model ({args.best_metric_key} = {state.best_metric:.6g}) "
                        f"from {state.best_model_checkpoint}")
        runtime = time.monotonic() - start
        steps = state.global_step - first_step
        metrics = {"train_runtime": runtime, "train_loss": loss_sum / max(steps, 1),
                   "train_steps_per_second": steps / max(runtime, 1e-9), "epoch": state.epoch,
                   "stop_reason": stop_reason or "finished"}
        self.log({k: v for k, v in metrics.items() if k != "epoch"})
        for callback in self.callbacks:
            callback.on_train_end(self)
        return TrainOutput(state.global_step, metrics["train_loss"], metrics)

    # ---------------------------------------------------------------- data
    def _batches_per_epoch(self) -> int:
        if len(self.train_dataset) == 0:
            raise ConfigError("train_dataset: the training dataset is empty")
        per_process = math.ceil(len(self.train_dataset) / self.ctx.world_size)
        size = self.args.per_device_train_batch_size
        batches = per_process // size if self.args.dataloader_drop_last else math.ceil(per_process / size)
        if batches == 0:
            raise ConfigError(f"per_device_train_batch_size: {size} is larger than the {per_process} training "
                              "examples per process, and dataloader_drop_last drops them all; use a smaller batch")
        return batches

    def train_dataloader(self, epoch: int, skip_batches: int = 0) -> DataLoader:
        """This process's batches of `epoch`, minus the first `skip_batches` (already trained on).

        The order is DistributedSampler's: a permutation seeded with seed + epoch, and process r
        takes positions r, r + world_size, ... of it (one process takes them all). Skipping happens
        on indices, so skipped examples are never loaded or collated (no random numbers drawn).
        """
        sampler = DistributedSampler(self.train_dataset, num_replicas=self.ctx.world_size, rank=self.ctx.rank,
                                     shuffle=True, seed=self.args.seed)
        sampler.set_epoch(epoch)
        indices = list(sampler)[skip_batches * self.args.per_device_train_batch_size:]
        return DataLoader(self.train_dataset, batch_size=self.args.per_device_train_batch_size, sampler=indices,
                          collate_fn=self._collate_fn(), num_workers=self.args.dataloader_num_workers,
                          drop_last=self.args.dataloader_drop_last, pin_memory=self.ctx.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.args.seed + epoch))

    def _windows(self, batches_per_epoch: int):
        """Yield lists of gradient_accumulation_steps micro-batches; a window never spans two epochs."""
        epoch, skip = self.state.epoch_index, self.state.micro_batches_in_epoch
        while True:
            window = []
            for batch in self.train_dataloader(epoch, skip):
                window.append(batch)
                if len(window) == self.args.gradient_accumulation_steps:
                    yield window
                    window = []
            if window:
                yield window
            epoch, skip = epoch + 1, 0

    def eval_dataloader(self, dataset: Dataset) -> DataLoader:
        self._report_unused_columns(dataset)
        return DataLoader(dataset, batch_size=self.args.per_device_eval_batch_size, shuffle=False,
                          collate_fn=self._collate_fn(), num_workers=self.args.dataloader_num_workers)

    def _collate_fn(self) -> Callable:
        """The data_collator, given only the columns the model takes (common.train.columns)."""
        if not self.args.remove_unused_columns:
            return self.data_collator
        return ColumnFilter(self.data_collator, forward_arguments(self.model))

    def _report_unused_columns(self, dataset) -> None:
        """One line per Trainer naming the dataset columns that remove_unused_columns drops."""
        if not self.args.remove_unused_columns:
            return
        dropped = [c for c in unused_columns(dataset, forward_arguments(self.model)) if c not in self._reported_columns]
        if dropped:
            self._reported_columns.update(dropped)
            self._print(f"remove_unused_columns: dropping the dataset column(s) {', '.join(dropped)} "
                        f"({type(self.model).__name__}.forward does not take them)")

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, eval_dataset: Optional[Dataset] = None, metric_key_prefix: str = "eval") -> dict:
        """{'eval_loss', 'eval_<metric>' from compute_metrics, 'eval_runtime', ...}; also logged.

        eval_loss is the mean over all label units of the dataset (sum_b n_b L_b / sum_b n_b).
        Under torchrun every process evaluates the whole set, so all agree on the metrics.
        """
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ConfigError("eval_dataset: evaluate() needs a dataset "
                              "(Trainer(..., eval_dataset=...) or evaluate(dataset))")
        output = self._prediction_loop(dataset, metric_key_prefix, keep_outputs=self.compute_metrics is not None)
        self.log(output.metrics)
        for callback in self.callbacks:
            callback.on_evaluate(self, output.metrics)
        return output.metrics

    def predict(self, test_dataset: Dataset, metric_key_prefix: str = "test") -> PredictionOutput:
        """Logits of every example (numpy, concatenated; padded with -100 where lengths differ)."""
        return self._prediction_loop(test_dataset, metric_key_prefix, keep_outputs=True)

    @torch.no_grad()
    def _prediction_loop(self, dataset: Dataset, prefix: str, keep_outputs: bool) -> PredictionOutput:
        start, model = time.monotonic(), self.model
        was_training = model.training
        model.eval()
        loss_sum, units, batches, predictions, labels = 0.0, 0, 0, [], []
        for batch in self.eval_dataloader(dataset):
            n = label_units(batch, self.shifts_labels)
            batch = move_to_device(batch, self.ctx.device)
            with autocast_context(self.ctx.device, self.args.bf16):
                output = model(**batch)
            if getattr(output, "loss", None) is not None:
                loss_sum, units = loss_sum + output.loss.float().item() * n, units + n
            if keep_outputs:
                predictions.append(to_numpy(output.logits))
                if "labels" in batch:
                    labels.append(to_numpy(batch["labels"]))
            batches += 1
        model.train(was_training)
        predictions = self._concatenate(predictions) if predictions else None
        label_ids = self._concatenate(labels) if labels else None
        metrics = {f"{prefix}_loss": loss_sum / units} if units else {}
        if self.compute_metrics is not None and predictions is not None:
            for key, value in self.compute_metrics(EvalPrediction(predictions, label_ids)).items():
                metrics[key if key.startswith(f"{prefix}_") else f"{prefix}_{key}"] = value
        runtime = time.monotonic() - start
        metrics.update({f"{prefix}_runtime": runtime, f"{prefix}_samples_per_second": len(dataset) / max(runtime, 1e-9),
                        f"{prefix}_steps_per_second": batches / max(runtime, 1e-9)})
        return PredictionOutput(predictions, label_ids, metrics)

    @staticmethod
    def _concatenate(items: list):
        if isinstance(items[0], tuple):
            return tuple(pad_and_concatenate([item[i] for item in items]) for i in range(len(items[0])))
        return pad_and_concatenate(items)

    # ---------------------------------------------------------------- saving, logging, setup
    def save_model(self, output_dir: Optional[str] = None) -> None:
        """Write the model (config.json + model.safetensors) and tokenizer files to a folder (rank 0)."""
        full_weights = self._full_weights()  # a collective under --fsdp: every process gathers
        if self.ctx.is_main_process:
            save_model_files(self.model, output_dir or self.args.output_dir, self.tokenizer, full_weights)
        barrier(self.ctx)

    def _full_weights(self):
        """Under --fsdp the gathered full weights (every process must call this), else None."""
        return full_state_dict(self.model) if is_sharded(self.model) else None

    def log(self, logs: dict) -> None:
        """Record logs with step and epoch: trainer_state's log_history and a line of output_dir/log.jsonl."""
        record = {"step": self.state.global_step, "epoch": round(self.state.epoch, 4), **logs}
        self.state.log_history.append(record)
        if self.ctx.is_main_process:
            Path(self.args.output_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(self.args.output_dir) / LOG_NAME, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if self.args.disable_tqdm or any(k.startswith(("eval_", "test_", "train_")) for k in logs):
                tqdm.write(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in record.items()}),
                           file=sys.stderr)
        for callback in self.callbacks:
            callback.on_log(self, record)

    def _write_log_file(self) -> None:
        """log.jsonl restarts from the log history of the resumed checkpoint (drops lines of lost steps)."""
        if self.ctx.is_main_process:
            path = Path(self.args.output_dir) / LOG_NAME
            path.write_text("".join(json.dumps(r) + "\n" for r in self.state.log_history), encoding="utf-8")

    def _print(self, message: str) -> None:
        if self.ctx.is_main_process:
            tqdm.write(message, file=sys.stderr)

    def _prepare_output_dir(self, resume: Optional[Path]) -> None:
        """Refuse to mix two runs in one output_dir, or to overwrite a saved model, unless told to
        resume or overwrite."""
        output_dir = Path(self.args.output_dir)
        previous = list_checkpoints(output_dir) + [p for p in (output_dir / LOG_NAME,) if p.exists()]
        if previous and resume is None:
            if not self.args.overwrite_output_dir:
                names = ", ".join(p.name for p in previous[-3:])
                raise ConfigError(f"output_dir: {output_dir} already holds a training run ({names}); pass "
                                  "--overwrite_output_dir to start afresh (deletes its checkpoints and log), "
                                  "--resume_from_checkpoint latest to continue it, or another --output_dir")
            barrier(self.ctx)
            if self.ctx.is_main_process:
                for p in previous:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        saved = [name for name in SAVED_MODEL_FILES if (output_dir / name).is_file()]
        if saved and not previous and resume is None and not self.args.overwrite_output_dir:
            raise ConfigError(f"output_dir: {output_dir} already holds a saved model ({', '.join(saved)}) that this run "
                              "would overwrite; pass --overwrite_output_dir to replace it when training ends, another "
                              f"--output_dir to keep it, or --model_name_or_path {output_dir} with another "
                              "--output_dir to start from it")
        if self.ctx.is_main_process:
            output_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_folders(output_dir)
        barrier(self.ctx)

    def _resume(self, folder: Path, max_steps: int, steps_per_epoch: int) -> None:
        load_model_weights(self.model, folder)
        self.state = load_training_state(folder, self.optimizer, self.lr_scheduler, self.ctx, sharded=self.args.fsdp)
        saved = (self.state.train_batch_size, self.state.gradient_accumulation_steps, self.state.world_size)
        now = (self.args.per_device_train_batch_size, self.args.gradient_accumulation_steps, self.ctx.world_size)
        if saved != now or self.state.steps_per_epoch != steps_per_epoch:
            warnings.warn(f"{folder} was trained with (batch size, accumulation, processes) = {saved} and "
                          f"{self.state.steps_per_epoch} steps per epoch; now {now} and {steps_per_epoch}: "
                          "the data order will not continue exactly", stacklevel=3)
        self.state.max_steps, self.state.steps_per_epoch = max_steps, steps_per_epoch
        restore_rng_state(folder, self.ctx)  # last, so nothing above draws from the restored generators
        self._print(f"resuming from {folder} at step {self.state.global_step} (epoch {self.state.epoch:.2f})")

    def _wrap_model(self) -> nn.Module:
        model = self.model
        if self.args.gradient_checkpointing:
            enable = getattr(model, "gradient_checkpointing_enable", None)
            if enable is None:
                raise ConfigError(f"--gradient_checkpointing: {type(model).__name__} cannot recompute its blocks "
                                  "(it has no gradient_checkpointing_enable()); train without the flag")
            kwargs = self.args.checkpointing_kwargs  # transformers' keyword, given only when set
            enable(gradient_checkpointing_kwargs=kwargs) if kwargs else enable()
        if self.args.fsdp:
            return model  # sharded in place before the optimizer was built (train)
        if self.ctx.is_distributed:
            device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        if self.args.torch_compile:
            model = torch.compile(model)
        return model

    @contextlib.contextmanager
    def _catch_sigint(self):
        """First Ctrl-C: finish the step, save, stop. Second Ctrl-C: stop at once (KeyboardInterrupt)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigint(signum, frame):
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True
            self._print("\nCtrl-C: finishing this step, then saving a checkpoint (press Ctrl-C again to quit now)")

        self._interrupted = False
        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
