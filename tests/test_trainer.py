"""The training loop: exact gradient accumulation, evaluation, checkpoints, resume, and clean stops."""
from __future__ import annotations

import errno
import json
import os
import signal

import numpy as np
import pytest
import torch

from _trainer_toys import (ClassificationDataset, RaggedTokenDataset, ToyClassifier, ToyPretrained, ToyTokenizer,
                           ToyTokenLM, random_replacement_collator)
from common.hub.pretrained import load_state_dict
from common.errors import CheckpointError, ConfigError, DataError
from common.nn.losses import cross_entropy
from common.train.trainer import Trainer, TrainingDivergedError
from common.train.utils import TrainerCallback, default_data_collator
from common.train.args import TrainingArguments


def make_args(tmp_path, **overrides) -> TrainingArguments:
    settings = dict(output_dir=str(tmp_path / "out"), use_cpu=True, disable_tqdm=True, logging_steps=1,
                    save_strategy="no", learning_rate=1e-2, per_device_train_batch_size=4, seed=1)
    settings.update(overrides)
    return TrainingArguments(**settings)


def make_trainer(tmp_path, model=None, dataset=None, callbacks=None, **overrides) -> Trainer:
    if model is None:
        torch.manual_seed(0)
        model = ToyTokenLM()
    return Trainer(model, make_args(tmp_path, **overrides), train_dataset=dataset or RaggedTokenDataset(),
                   eval_dataset=RaggedTokenDataset(n=10, seed=5), tokenizer=ToyTokenizer(), callbacks=callbacks)


def max_weight_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.state_dict().values(), b.state_dict().values()))


class At(TrainerCallback):
    """Run `action(trainer)` at the end of optimizer step `step`."""

    def __init__(self, step, action):
        self.step, self.action = step, action

    def on_step_end(self, trainer):
        if trainer.state.global_step == self.step:
            self.action(trainer)


# -------------------------------------------------------------- gradient accumulation
# With eps >> |g|, AdamW's first step is lr * g / (|g| + eps) ~ g (lr = eps): an SGD step, so
# comparing weights compares gradients. (With the default eps, step 1 is ~lr * sign(g) and
# would hide a wrong gradient.)
SGD_LIKE = dict(learning_rate=1e3, adam_epsilon=1e3, max_grad_norm=0.0, max_steps=1)


def test_accumulating_4_micro_batches_of_2_equals_one_batch_of_8_for_a_token_loss(tmp_path):
    big = make_trainer(tmp_path / "big", per_device_train_batch_size=8, gradient_accumulation_steps=1, **SGD_LIKE)
    small = make_trainer(tmp_path / "small", per_device_train_batch_size=2, gradient_accumulation_steps=4, **SGD_LIKE)
    micro_batches = list(small.train_dataloader(epoch=0))[:4]
    counts = [int((b["labels"] != -100).sum()) for b in micro_batches]
    assert len(set(counts)) > 1, f"the test needs unequal label-token counts per micro-batch, got {counts}"

    # The naive average of micro-batch means has a different gradient: the test can fail.
    def gradient(loss_fn):
        torch.manual_seed(0)
        model = ToyTokenLM()
        loss_fn(model).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])
    naive = gradient(lambda m: sum(m(**b).loss for b in micro_batches) / 4)
    exact = gradient(lambda m: sum(m(**b).loss * n for b, n in zip(micro_batches, counts)) / sum(counts))
    assert (naive - exact).abs().max() > 1e-3, "the data does not tell naive averaging from the exact rule"

    before = [p.clone() for p in big.model.parameters()]
    big.train()
    small.train()
    moved = max((p - q).abs().max().item() for p, q in zip(big.model.parameters(), before))
    err = max_weight_difference(big.model, small.model)
    assert moved > 1e-2, f"the step barely moved the weights ({moved:.2e}); the comparison would be vacuous"
    assert err <= 1e-6, f"weights after one step: accumulation 4 x 2 differs from batch 8 by {err:.2e} (tolerance 1e-6)"


def test_accumulation_weights_per_sequence_losses_by_batch_size(tmp_path):
    # 10 examples, micro-batches of 3, 3, 3, 1 versus one batch of 10.
    dataset = ClassificationDataset(n=10)
    trainers = []
    for name, size, steps in (("big", 10, 1), ("small", 3, 4)):
        torch.manual_seed(0)
        trainers.append(make_trainer(tmp_path / name, model=ToyClassifier(), dataset=dataset,
                                     per_device_train_batch_size=size, gradient_accumulation_steps=steps, **SGD_LIKE))
        trainers[-1].train()
    err = max_weight_difference(trainers[0].model, trainers[1].model)
    assert err <= 1e-6, f"micro-batches 3+3+3+1 differ from one batch of 10 by {err:.2e} (tolerance 1e-6)"


# -------------------------------------------------------------- data, evaluation, prediction
def test_data_order_is_a_function_of_seed_and_epoch_and_skipping_is_exact(tmp_path):
    def order(trainer, epoch, skip=0):
        return [b["input_ids"][:, 0].tolist() for b in trainer.train_dataloader(epoch, skip)]
    a, b = make_trainer(tmp_path / "a"), make_trainer(tmp_path / "b")
    c = make_trainer(tmp_path / "c", seed=2)
    assert order(a, 0) == order(b, 0), "same seed and epoch must give the same order"
    assert order(a, 0) != order(a, 1), "each epoch must be shuffled differently"
    assert order(a, 0) != order(c, 0), "another seed must give another order"
    assert order(a, 1, skip=2) == order(a, 1)[2:], "skipping 2 batches must give the rest of the same order"


def test_default_collator_pads_with_the_tokenizer_and_labels_with_minus_100():
    batch = default_data_collator([{"input_ids": [5, 6, 7], "labels": [5, -100, 7]},
                                   {"input_ids": [8], "labels": [8]}], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[5, -100, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    stacked = default_data_collator([{"x": torch.ones(2), "labels": 0.5}, {"x": torch.zeros(2), "labels": 1.5}])
    assert stacked["x"].shape == (2, 2) and stacked["labels"].dtype == torch.float32
    with pytest.raises(DataError, match="tokenizer"):
        default_data_collator([{"input_ids": [1, 2]}, {"input_ids": [3]}])


def test_evaluate_reports_the_token_mean_loss_of_the_whole_set_and_prefixed_metrics(tmp_path):
    def accuracy(eval_pred):
        predictions, labels = eval_pred  # unpacks like transformers' EvalPrediction
        keep = labels != -100
        return {"accuracy": float((predictions.argmax(-1) == labels)[keep].mean())}
    trainer = make_trainer(tmp_path, per_device_eval_batch_size=3)
    trainer.compute_metrics = accuracy
    metrics = trainer.evaluate()
    batch = default_data_collator(list(trainer.eval_dataset), pad_token_id=0)
    with torch.no_grad():
        logits = trainer.model(**batch).logits
    expected = cross_entropy(logits.reshape(-1, logits.size(-1)), batch["labels"].reshape(-1)).item()
    assert abs(metrics["eval_loss"] - expected) <= 1e-6, \
        f"eval_loss {metrics['eval_loss']:.6f} is not the token mean {expected:.6f} over the set"
    keep = batch["labels"] != -100
    expected_accuracy = (logits.argmax(-1) == batch["labels"])[keep].float().mean().item()
    assert abs(metrics["eval_accuracy"] - expected_accuracy) <= 1e-6
    assert {"eval_runtime", "eval_samples_per_second"} <= metrics.keys(), f"got {sorted(metrics)}"


def test_predict_concatenates_logits_padding_shorter_batches_with_minus_100(tmp_path):
    trainer = make_trainer(tmp_path, per_device_eval_batch_size=4)
    dataset = RaggedTokenDataset(n=10, seed=5)
    output = trainer.predict(dataset)
    lengths = [len(item["input_ids"]) for item in dataset]
    longest = max(lengths)
    assert output.predictions.shape == (10, longest, 13), f"got {output.predictions.shape}"
    assert output.label_ids.shape == (10, longest)
    batch_lengths = [max(lengths[i:i + 4]) for i in range(0, 10, 4)]
    first_short = next(i for i, n in enumerate(batch_lengths) if n < longest)
    row = first_short * 4
    assert np.all(output.predictions[row, batch_lengths[first_short]:] == -100), "padding of predictions must be -100"
    assert "test_loss" in output.metrics


# -------------------------------------------------------------- logging
def test_log_jsonl_has_the_training_fields_and_tokens_count_the_attention_mask(tmp_path):
    dataset = RaggedTokenDataset(n=12)
    trainer = make_trainer(tmp_path, dataset=dataset, max_steps=3)  # 12 examples / 4 = 3 steps = 1 epoch
    trainer.train()
    records = [json.loads(line) for line in open(tmp_path / "out" / "log.jsonl")]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    missing = {"step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_second"} - steps[0].keys()
    assert not missing, f"log lines lack {missing}"
    tokens = sum(len(item["input_ids"]) for item in dataset)
    assert trainer.state.num_input_tokens_seen == tokens, \
        f"tokens seen {trainer.state.num_input_tokens_seen} != {tokens} (attention_mask sum of one epoch)"
    assert abs(steps[-1]["epoch"] - 1.0) < 1e-9


def test_bf16_runs_the_forward_in_bfloat16_and_keeps_float32_weights(tmp_path):
    seen = []

    class Recording(ToyTokenLM):
        def forward(self, **batch):
            out = super().forward(**batch)
            seen.append(out.logits.dtype)
            return out
    torch.manual_seed(0)
    trainer = make_trainer(tmp_path, model=Recording(), bf16=True, max_steps=2)
    trainer.train()
    assert seen and all(d == torch.bfloat16 for d in seen), f"logits dtypes under bf16: {set(seen)}"
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}


# -------------------------------------------------------------- checkpoints
def test_checkpoint_folder_holds_everything_and_loads_with_weights_only(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(ToyPretrained(dropout=0.1), make_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2),
                      train_dataset=RaggedTokenDataset(), processing_class=ToyTokenizer())
    trainer.train()
    folder = tmp_path / "out" / "checkpoint-2"
    expected = {"config.json", "model.safetensors", "vocab.txt", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                "trainer_state.json", "training_args.json"}
    assert expected <= set(os.listdir(folder)), f"missing: {expected - set(os.listdir(folder))}"
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.load(folder / name, weights_only=True)
    state = json.loads((folder / "trainer_state.json").read_text())
    assert (state["global_step"], state["epoch_index"], state["micro_batches_in_epoch"]) == (2, 0, 2)
    saved = load_state_dict(folder)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(saved[key], value), f"saved {key} differs from the model"


def test_saved_keys_carry_no_orig_mod_prefix_from_torch_compile(tmp_path):
    compiled = torch.compile(ToyTokenLM(), backend="eager")
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict()), "torch.compile should add the prefix"
    trainer = make_trainer(tmp_path, model=compiled)
    trainer.save_model(str(tmp_path / "final"))
    keys = sorted(load_state_dict(tmp_path / "final"))
    assert keys == sorted(ToyTokenLM().state_dict()), f"saved keys: {keys}"


def test_a_stopped_run_resumed_ends_with_the_same_weights_bit_for_bit(tmp_path):
    # dropout + a collator drawing random numbers + shuffling + accumulation + epochs of 4 steps:
    # the resume must restore the weights, AdamW, the schedule, the data position and every RNG.
    def trainer_for(folder, callbacks=None):
        torch.manual_seed(0)
        return Trainer(ToyTokenLM(dropout=0.2), make_args(folder, max_steps=10, per_device_train_batch_size=3,
                                                          gradient_accumulation_steps=2, warmup_steps=2,
                                                          save_strategy="steps", save_steps=3),
                       train_dataset=RaggedTokenDataset(n=20), data_collator=random_replacement_collator,
                       callbacks=callbacks)
    full = trainer_for(tmp_path / "full")
    full.train()
    first = trainer_for(tmp_path / "resumed", callbacks=[At(5, lambda t: setattr(t, "should_stop", True))])
    assert first.train().metrics["stop_reason"] == "stopped by a callback"
    assert first.state.global_step == 5 and (tmp_path / "resumed" / "out" / "checkpoint-5").is_dir()
    second = trainer_for(tmp_path / "resumed")
    second.train(resume_from_checkpoint=True)
    differ = [k for k, v in full.model.state_dict().items() if not torch.equal(v, second.model.state_dict()[k])]
    assert not differ, f"after resume these weights differ from the uninterrupted run: {differ}"
    steps = [r["step"] for r in map(json.loads, open(tmp_path / "resumed" / "out" / "log.jsonl")) if "loss" in r]
    assert steps == list(range(1, 11)), f"log.jsonl training steps after resume: {steps}"


def test_epoch_strategies_evaluate_and_save_at_each_epoch_end(tmp_path):
    # 20 examples / batch 4 = 5 micro-batches per epoch; accumulation 2 -> windows of 2, 2, 1 = 3 steps
    trainer = make_trainer(tmp_path, dataset=RaggedTokenDataset(n=20), num_train_epochs=2,
                           gradient_accumulation_steps=2, eval_strategy="epoch", save_strategy="epoch")
    output = trainer.train()
    assert output.global_step == 6, f"2 epochs of 3 steps, trained {output.global_step}"
    evals = [r["step"] for r in trainer.state.log_history if "eval_loss" in r]
    kept = sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*"))
    assert evals == [3, 6] and kept == ["checkpoint-3", "checkpoint-6"], f"evaluated at {evals}, saved {kept}"
    state = json.loads((tmp_path / "out" / "checkpoint-3" / "trainer_state.json").read_text())
    assert (state["epoch"], state["epoch_index"], state["micro_batches_in_epoch"]) == (1.0, 1, 0)


def test_evaluation_without_an_eval_dataset_is_a_config_error(tmp_path):
    trainer = Trainer(ToyTokenLM(), make_args(tmp_path, eval_strategy="epoch"), train_dataset=RaggedTokenDataset())
    with pytest.raises(ConfigError, match="^eval_strategy:.*eval_dataset"):
        trainer.train()


def test_resume_true_picks_the_newest_checkpoint_and_a_path_picks_that_one(tmp_path):
    make_trainer(tmp_path, max_steps=4, save_strategy="steps", save_steps=2).train()
    starts = []
    record = TrainerCallback()
    record.on_train_begin = lambda trainer: starts.append(trainer.state.global_step)
    make_trainer(tmp_path, max_steps=4, callbacks=[record]).train(resume_from_checkpoint=True)
    make_trainer(tmp_path, max_steps=4, callbacks=[record]).train(str(tmp_path / "out" / "checkpoint-2"))
    assert starts == [4, 2], f"resumed at steps {starts}, expected [4, 2]"


def test_resuming_a_checkpoint_of_another_model_is_a_checkpoint_error(tmp_path):
    make_trainer(tmp_path, max_steps=1, save_strategy="steps", save_steps=1).train()
    with pytest.raises(CheckpointError, match="different model.*shape"):
        make_trainer(tmp_path, model=ToyTokenLM(hidden=6), max_steps=2).train(resume_from_checkpoint=True)
    with pytest.raises(CheckpointError, match="does not exist"):
        make_trainer(tmp_path, max_steps=2).train(str(tmp_path / "out" / "checkpoint-99"))


def test_an_output_dir_with_a_previous_run_needs_overwrite_or_resume(tmp_path):
    make_trainer(tmp_path, max_steps=1, save_strategy="steps", save_steps=1).train()
    with pytest.raises(ConfigError, match="--overwrite_output_dir") as error:
        make_trainer(tmp_path, max_steps=1).train()
    assert "--resume_from_checkpoint" in str(error.value)
    make_trainer(tmp_path, max_steps=1, overwrite_output_dir=True).train()
    assert not (tmp_path / "out" / "checkpoint-1").exists(), "overwrite_output_dir must remove the old checkpoints"


def test_rotation_keeps_the_newest_and_the_best_and_load_best_restores_it(tmp_path):
    scores = iter([3.0, 1.0, 2.0, 0.0])  # best at step 1
    trainer = make_trainer(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=1, save_strategy="steps",
                           save_steps=1, save_total_limit=1, metric_for_best_model="score",
                           load_best_model_at_end=True)
    trainer.compute_metrics = lambda eval_pred: {"score": next(scores)}
    trainer.train()
    kept = sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*"))
    assert kept == ["checkpoint-1", "checkpoint-4"], f"kept {kept}"
    assert trainer.state.best_metric == 3.0 and trainer.state.best_model_checkpoint.endswith("checkpoint-1")
    best = load_state_dict(tmp_path / "out" / "checkpoint-1")
    assert all(torch.equal(best[k], v) for k, v in trainer.model.state_dict().items()), \
        "load_best_model_at_end did not load the weights of checkpoint-1"


# -------------------------------------------------------------- stopping cleanly
def test_a_nan_loss_stops_with_the_step_named_and_nothing_saved(tmp_path):
    snapshot = {}

    def poison(trainer):
        snapshot.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
        trainer.model.poisoned = True
    trainer = make_trainer(tmp_path, max_steps=10, save_strategy="steps", save_steps=2, callbacks=[At(3, poison)])
    with pytest.raises(TrainingDivergedError, match="at step 4") as error:
        trainer.train()
    assert "checkpoint-2" in str(error.value), f"the message should name the last good checkpoint: {error.value}"
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["checkpoint-2"]
    assert all(torch.equal(snapshot[k], v) for k, v in trainer.model.state_dict().items()), \
        "the NaN update must not be applied to the weights"


def test_ctrl_c_finishes_the_step_saves_and_prints_the_resume_flag(tmp_path, capsys):
    handler_before = signal.getsignal(signal.SIGINT)
    trainer = make_trainer(tmp_path, max_steps=10, callbacks=[At(2, lambda t: os.kill(os.getpid(), signal.SIGINT))])
    output = trainer.train()
    assert (output.global_step, output.metrics["stop_reason"]) == (2, "interrupted")
    folder = tmp_path / "out" / "checkpoint-2"
    assert (folder / "trainer_state.json").is_file(), "Ctrl-C must save a checkpoint even with save_strategy='no'"
    assert f"--resume_from_checkpoint {folder}" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is handler_before, "train() must restore the previous SIGINT handler"


class FakeTime:
    """The `time` module as a module under test sees it, with a clock that moves only when told."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now

    def __getattr__(self, name):
        return getattr(__import__("time"), name)


def test_max_time_stops_after_the_current_step_with_a_checkpoint_and_an_evaluation(tmp_path, monkeypatch):
    """Each step takes 0.1 s on a fake clock: max_time=0.35 stops after step 4 (0.4 s >= 0.35 s),
    on any machine."""
    import common.train.trainer as trainer_module
    clock = FakeTime()
    monkeypatch.setattr(trainer_module, "time", clock)
    tick = TrainerCallback()
    tick.on_step_end = lambda trainer: setattr(clock, "now", clock.now + 0.1)
    trainer = make_trainer(tmp_path, max_steps=1000, max_time=0.35, eval_strategy="steps", eval_steps=1000,
                           callbacks=[tick])
    output = trainer.train()
    step = output.global_step
    assert step == 4 and output.metrics["stop_reason"] == "max_time", (
        f"0.1 s per step, max_time 0.35 s: expected a stop after step 4, stopped at {step}: {output.metrics}")
    assert (tmp_path / "out" / f"checkpoint-{step}").is_dir()
    evals = [r for r in trainer.state.log_history if "eval_loss" in r]
    assert [r["step"] for r in evals] == [step], f"evaluations at steps {[r['step'] for r in evals]}"


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint_and_removes_the_temp_folder(tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def save_until_disk_full(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 5:  # the 2nd checkpoint, after its rng_state.pth: a half-written folder
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(obj, path, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save_until_disk_full)
    trainer = make_trainer(tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
    with pytest.raises(CheckpointError, match="No space left on device") as error:
        trainer.train()
    out = tmp_path / "out"
    assert "checkpoint-2" in str(error.value), f"the message should name the kept checkpoint: {error.value}"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoint-2"], \
        f"folders left: {sorted(p.name for p in out.iterdir())}"
    assert (out / "checkpoint-2" / "optimizer.pt").is_file()


@pytest.mark.slow
@pytest.mark.skipif(__import__("shutil").which("g++") is None, reason="torch.compile on the CPU needs a C++ compiler")
def test_torch_compile_trains_like_eager_and_saves_keys_without_orig_mod(tmp_path):
    eager = make_trainer(tmp_path / "eager", max_steps=2)
    eager.train()
    compiled = make_trainer(tmp_path / "compiled", max_steps=2, torch_compile=True, save_strategy="steps", save_steps=2)
    compiled.train()
    assert type(compiled._wrap_model()).__name__ == "OptimizedModule", "torch_compile=True did not compile"
    keys = sorted(load_state_dict(tmp_path / "compiled" / "out" / "checkpoint-2"))
    assert keys == sorted(ToyTokenLM().state_dict()), f"saved keys: {keys}"
    err = max_weight_difference(eager.model, compiled.model)
    assert err <= 1e-5, f"compiled training differs from eager by {err:.2e} (tolerance 1e-5)"


def test_accumulation_counts_only_the_labels_a_causal_lm_scores(tmp_path):
    """A causal LM never scores position 0's label (the shift is inside its loss), so n_i counts
    labels[:, 1:]: counting position 0 too weights ragged micro-batches wrongly (2.9e-2 here)."""
    from common.train.utils import label_units
    from minigpt import GPT, GPTConfig

    batch = {"labels": torch.tensor([[5, 6, -100], [7, -100, -100]])}
    assert label_units(batch) == 3 and label_units(batch, shifted=True) == 1, \
        f"label_units: {label_units(batch)} unshifted (want 3), {label_units(batch, shifted=True)} shifted (want 1)"
    config = dict(vocab_size=13, block_size=16, n_layer=1, n_head=2, n_embd=8, dropout=0.0)
    trainers = []
    for name, size, steps in (("big", 8, 1), ("small", 2, 4)):
        torch.manual_seed(0)
        trainers.append(make_trainer(tmp_path / name, model=GPT(GPTConfig(**config)),
                                     per_device_train_batch_size=size, gradient_accumulation_steps=steps, **SGD_LIKE))
        trainers[-1].train()
    err = max_weight_difference(trainers[0].model, trainers[1].model)
    assert err <= 1e-5, f"a GPT on ragged batches: accumulation 4 x 2 differs from batch 8 by {err:.2e} (tolerance 1e-5)"
