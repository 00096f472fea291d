"""TrainingArguments: every knob of the training loop, one dataclass, checked at construction.

Names and defaults follow Hugging Face `transformers.TrainingArguments` where the concept exists,
so a script written for one reads the same with the other. Each field carries its `--help` text
in `metadata["help"]`; `common.cli.args` turns every field into a command-line flag.

Batch arithmetic (the same as transformers):
    examples per optimizer step = per_device_train_batch_size * gradient_accumulation_steps * world_size

Learning-rate schedule: warmup for W steps, then decay to the end (see `common.train.optim`), with
    W = warmup_steps if warmup_steps > 0 else ceil(warmup_ratio * total_steps).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Optional

from common.errors import ConfigError
from common.nn.checkpointing import checkpointing_granularity
from common.hub.config import require

SCHEDULER_TYPES = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr",
                   "warmup_stable_decay")
# lr_scheduler_kwargs each schedule takes (transformers' names); the others take none
SCHEDULER_KWARGS = {"cosine_with_min_lr": ("min_lr", "min_lr_rate"),
                    "warmup_stable_decay": ("num_decay_steps", "num_stable_steps", "min_lr_ratio",
                                            "warmup_type", "decay_type")}
# transformers' names for torch's AdamW (both build torch.optim.AdamW with torch's default kernel choice);
# muon: common/train/muon.py
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch", "muon")
INTERVAL_STRATEGIES = ("no", "steps", "epoch")
RESUME_NEWEST = ("latest", "true", "True")  # strings that mean "the newest checkpoint-* in output_dir"


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class TrainingArguments:
    output_dir: str = field(default="trainer_output", metadata=_help(
        "Folder for checkpoints (checkpoint-<step>/), log.jsonl and the final model."))
    overwrite_output_dir: bool = field(default=False, metadata=_help(
        "Start afresh in an output_dir that holds a previous run (its checkpoint-* folders and "
        "log.jsonl are deleted first) or a saved model (replaced when training ends)."))
    num_train_epochs: float = field(default=3.0, metadata=_help(
        "Passes over the training set (a fraction stops part-way). Ignored when max_steps > 0."))
    max_steps: int = field(default=-1, metadata=_help(
        "Total optimizer steps; overrides num_train_epochs when > 0."))
    per_device_train_batch_size: int = field(default=8, metadata=_help(
        "Examples per micro-batch on each process (GPU or CPU)."))
    per_device_eval_batch_size: int = field(default=8, metadata=_help(
        "Examples per evaluation batch on each process."))
    gradient_accumulation_steps: int = field(default=1, metadata=_help(
        "Micro-batches summed into one optimizer step; the update equals one big batch, also "
        "for token-level losses (each micro-batch is weighted by its share of label tokens)."))
    learning_rate: float = field(default=5e-5, metadata=_help("Peak learning rate of AdamW."))
    optim: str = field(default="adamw_torch_fused", metadata=_help(
        "Optimizer: adamw_torch_fused or adamw_torch (both torch.optim.AdamW on every parameter) or muon "
        "(Muon's orthogonalised momentum on the hidden weight matrices with --muon_learning_rate, AdamW with "
        "--learning_rate on embeddings, output layers, biases and norms; common/train/muon.py).", choices=OPTIMIZERS))
    muon_learning_rate: float = field(default=0.02, metadata=_help(
        "Peak learning rate of the Muon matrices (with --optim muon); the schedule scales it like learning_rate."))
    muon_momentum: float = field(default=0.95, metadata=_help("Momentum mu of Muon (with --optim muon)."))
    weight_decay: float = field(default=0.0, metadata=_help(
        "Decoupled weight decay of AdamW; never applied to biases and LayerNorm weights "
        "(parameters with fewer than 2 dimensions)."))
    adam_beta1: float = field(default=0.9, metadata=_help("AdamW beta_1 (first-moment decay)."))
    adam_beta2: float = field(default=0.999, metadata=_help("AdamW beta_2 (second-moment decay)."))
    adam_epsilon: float = field(default=1e-8, metadata=_help("AdamW epsilon (added to sqrt(v_hat))."))
    max_grad_norm: float = field(default=1.0, metadata=_help(
        "Clip the global gradient L2 norm to this value; 0 disables clipping (the norm is still logged)."))
    warmup_steps: int = field(default=0, metadata=_help(
        "Steps of linear warmup from 0 to learning_rate; takes precedence over warmup_ratio."))
    warmup_ratio: float = field(default=0.0, metadata=_help(
        "Fraction of the total steps used for warmup (when warmup_steps is 0)."))
    lr_scheduler_type: str = field(default="linear", metadata=_help(
        "Learning-rate schedule after warmup.", choices=SCHEDULER_TYPES))
    lr_scheduler_kwargs: Optional[str] = field(default=None, metadata=_help(
        "JSON object of the schedule's own arguments, as transformers names them: cosine_with_min_lr "
        "takes min_lr or min_lr_rate ('{\"min_lr_rate\": 0.1}'); warmup_stable_decay takes num_decay_steps "
        "(required), num_stable_steps, min_lr_ratio, warmup_type and decay_type (linear, cosine, 1-sqrt). "
        "A dict is accepted from Python and stored as JSON."))
    logging_steps: int = field(default=500, metadata=_help(
        "Log loss, learning rate, grad norm and tokens/s every this many optimizer steps."))
    eval_strategy: str = field(default="no", metadata=_help(
        "When to evaluate on eval_dataset: never, every eval_steps, or at each epoch end.",
        choices=INTERVAL_STRATEGIES))
    eval_steps: Optional[int] = field(default=None, metadata=_help(
        "Evaluate every this many optimizer steps (required with --eval_strategy steps)."))
    save_strategy: str = field(default="steps", metadata=_help(
        "When to write checkpoint-<step>/: never, every save_steps, or at each epoch end. "
        "A checkpoint is also written at the end of training unless this is 'no'.",
        choices=INTERVAL_STRATEGIES))
    save_steps: int = field(default=500, metadata=_help(
        "Save a checkpoint every this many optimizer steps (with --save_strategy steps)."))
    save_total_limit: Optional[int] = field(default=None, metadata=_help(
        "Keep at most this many checkpoints (the newest, plus the best one when a metric is tracked)."))
    seed: int = field(default=42, metadata=_help(
        "Seed of python, numpy and torch at the start of training; the data order is a function "
        "of (seed, epoch) only."))
    bf16: bool = field(default=False, metadata=_help(
        "Run forward and loss under torch.autocast(bfloat16) on CPU/CUDA; weights stay float32."))
    use_cpu: bool = field(default=False, metadata=_help(
        "Train on the CPU even when CUDA or Apple MPS is available."))
    gradient_checkpointing: bool = field(default=False, metadata=_help(
        "Keep only each block's input in the forward pass and recompute the block in the backward "
        "(model.gradient_checkpointing_enable()): less activation memory for about one more forward."))
    gradient_checkpointing_kwargs: Optional[str] = field(default=None, metadata=_help(
        "JSON object passed to model.gradient_checkpointing_enable() with --gradient_checkpointing: "
        "'{\"granularity\": \"selective\"}' keeps all but the attention core and recomputes only the core "
        "from Q, K, V (less extra time, more memory than the default \"full\"; common/nn/checkpointing.py). "
        "A dict is accepted from Python and stored as JSON."))
    fsdp: bool = field(default=False, metadata=_help(
        "Under torchrun, shard weights, gradients and AdamW state over the processes (torch.distributed's "
        "fully_shard, common/train/fsdp.py) instead of a full copy in each (DDP). Resume such a run with the "
        "same number of processes and --fsdp."))
    torch_compile: bool = field(default=False, metadata=_help(
        "Wrap the model in torch.compile (saved keys never carry its _orig_mod. prefix)."))
    dataloader_num_workers: int = field(default=0, metadata=_help(
        "Worker processes that load batches; 0 loads in the main process (needed for bit-exact "
        "resume when the collator draws random numbers)."))
    dataloader_drop_last: bool = field(default=False, metadata=_help(
        "Drop the last incomplete training batch of each epoch."))
    resume_from_checkpoint: Optional[str] = field(default=None, metadata=_help(
        "A checkpoint-<step> folder to resume from, or 'latest' for the newest one in output_dir."))
    max_time: Optional[float] = field(default=None, metadata=_help(
        "Wall-clock budget in seconds for this call of train(); when it runs out, training stops "
        "after the current step with a final checkpoint (and evaluation)."))
    load_best_model_at_end: bool = field(default=False, metadata=_help(
        "At the end, load the weights of the checkpoint with the best metric_for_best_model."))
    metric_for_best_model: Optional[str] = field(default=None, metadata=_help(
        "Eval metric that decides the best checkpoint ('loss', 'accuracy', ...; 'eval_' optional). "
        "Defaults to 'loss' with load_best_model_at_end."))
    greater_is_better: Optional[bool] = field(default=None, metadata=_help(
        "Whether a larger metric_for_best_model is better; default: False for losses, True otherwise."))
    remove_unused_columns: bool = field(default=True, metadata=_help(
        "Drop the dataset columns that model.forward does not take (a text column left by "
        "datasets' .map, an id, ...) before collation; 'label' / 'label_ids' become 'labels'."))
    disable_tqdm: bool = field(default=False, metadata=_help(
        "Hide the progress bar (logs are then printed as JSON lines)."))

    def __post_init__(self):
        if isinstance(self.lr_scheduler_kwargs, dict):  # transformers takes a dict; the CLI gives JSON text
            self.lr_scheduler_kwargs = json.dumps(self.lr_scheduler_kwargs, sort_keys=True)
        if isinstance(self.gradient_checkpointing_kwargs, dict):
            self.gradient_checkpointing_kwargs = json.dumps(self.gradient_checkpointing_kwargs, sort_keys=True)
        self._check_types()
        require(bool(self.output_dir), "output_dir", "must be a folder path")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "logging_steps"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, name, f"must be an integer >= 1, got {value!r}")
        require(self.learning_rate >= 0, "learning_rate", f"must be >= 0, got {self.learning_rate}")
        require(self.optim in OPTIMIZERS, "optim",
                f"unknown optimizer {self.optim!r}; choose one of {', '.join(OPTIMIZERS)}")
        require(self.muon_learning_rate >= 0, "muon_learning_rate", f"must be >= 0, got {self.muon_learning_rate}")
        require(0 <= self.muon_momentum < 1, "muon_momentum", f"must be in [0, 1), got {self.muon_momentum}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            require(0 <= value < 1, name, f"must be in [0, 1), got {value}")
        require(self.adam_epsilon > 0, "adam_epsilon", f"must be > 0, got {self.adam_epsilon}")
        require(self.max_grad_norm >= 0, "max_grad_norm", f"must be >= 0 (0 = no clipping), got {self.max_grad_norm}")
        require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        require(0 <= self.warmup_ratio <= 1, "warmup_ratio", f"must be in [0, 1], got {self.warmup_ratio}")
        require(self.lr_scheduler_type in SCHEDULER_TYPES, "lr_scheduler_type",
                f"unknown scheduler {self.lr_scheduler_type!r}; choose one of {', '.join(SCHEDULER_TYPES)}")
        self._check_scheduler_kwargs()
        self._check_gradient_checkpointing_kwargs()
        require(self.max_steps == -1 or self.max_steps >= 1, "max_steps",
                f"must be -1 (use num_train_epochs) or >= 1, got {self.max_steps}")
        require(self.max_steps >= 1 or self.num_train_epochs > 0, "num_train_epochs",
                f"must be > 0 when max_steps is -1, got {self.num_train_epochs}")
        self._check_interval("eval_strategy", "eval_steps")
        self._check_interval("save_strategy", "save_steps")
        require(self.save_total_limit is None or self.save_total_limit >= 1, "save_total_limit",
                f"must be >= 1 or unset, got {self.save_total_limit}")
        require(self.dataloader_num_workers >= 0, "dataloader_num_workers",
                f"must be >= 0, got {self.dataloader_num_workers}")
        require(self.max_time is None or self.max_time > 0, "max_time",
                f"must be a positive number of seconds, got {self.max_time}")
        self._check_best_model()

    def _check_types(self) -> None:
        """Each field holds a value of its declared type (the CLI converts flags; Python callers
        and a hand-edited JSON can pass a string), so the range checks below compare numbers."""
        kinds = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,)}
        wanted = {"float": "a finite number", "int": "an integer", "bool": "true or false", "str": "a string"}
        for f in dataclasses.fields(self):
            declared = str(f.type).replace("Optional[", "").rstrip("]")
            value = getattr(self, f.name)
            if declared not in kinds or (value is None and "Optional" in str(f.type)):
                continue
            ok = isinstance(value, kinds[declared]) and (declared == "bool" or not isinstance(value, bool))
            if declared == "float" and ok:
                ok = math.isfinite(value)
            require(ok, f.name, f"must be {wanted[declared]}, got {value!r}")

    @property
    def scheduler_kwargs(self) -> dict:
        """lr_scheduler_kwargs as a dict ({} when unset)."""
        return json.loads(self.lr_scheduler_kwargs) if self.lr_scheduler_kwargs else {}

    def _check_scheduler_kwargs(self) -> None:
        """lr_scheduler_kwargs is a JSON object that the chosen schedule takes (common.train.optim)."""
        try:
            kwargs = json.loads(self.lr_scheduler_kwargs) if self.lr_scheduler_kwargs is not None else {}
        except json.JSONDecodeError as e:
            raise ConfigError(f"lr_scheduler_kwargs: not valid JSON ({e.msg}): {self.lr_scheduler_kwargs!r}; "
                              "write an object, e.g. --lr_scheduler_kwargs '{\"min_lr_rate\": 0.1}'") from None
        require(isinstance(kwargs, dict), "lr_scheduler_kwargs",
                f"must be a JSON object {{...}}, got {self.lr_scheduler_kwargs!r}")
        from common.train.optim import schedule_arguments  # here: optim imports this module

        # every check that does not need the number of steps, so a CLI fails before it loads data
        schedule_arguments(self.lr_scheduler_type, kwargs, self.learning_rate, 0, 2**62)

    @property
    def checkpointing_kwargs(self) -> dict:
        """gradient_checkpointing_kwargs as a dict ({} when unset)."""
        return json.loads(self.gradient_checkpointing_kwargs) if self.gradient_checkpointing_kwargs else {}

    def _check_gradient_checkpointing_kwargs(self) -> None:
        """A JSON object whose keys common/nn/checkpointing.py accepts, checked before any data is loaded."""
        if self.gradient_checkpointing_kwargs is None:
            return
        try:
            kwargs = json.loads(self.gradient_checkpointing_kwargs)
        except json.JSONDecodeError as e:
            raise ConfigError(f"gradient_checkpointing_kwargs: not valid JSON ({e.msg}): "
                              f"{self.gradient_checkpointing_kwargs!r}; write an object, e.g. "
                              "--gradient_checkpointing_kwargs '{\"granularity\": \"selective\"}'") from None
        require(isinstance(kwargs, dict), "gradient_checkpointing_kwargs",
                f"must be a JSON object {{...}}, got {self.gradient_checkpointing_kwargs!r}")
        try:
            checkpointing_granularity(kwargs)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        require(self.gradient_checkpointing, "gradient_checkpointing_kwargs",
                "takes effect only with --gradient_checkpointing; add that flag or drop this one")

    def _check_interval(self, strategy_field: str, steps_field: str) -> None:
        strategy, steps = getattr(self, strategy_field), getattr(self, steps_field)
        require(strategy in INTERVAL_STRATEGIES, strategy_field,
                f"must be one of {', '.join(INTERVAL_STRATEGIES)}, got {strategy!r}")
        if strategy == "steps":
            require(steps is not None and steps >= 1, steps_field,
                    f"must be an integer >= 1 with {strategy_field}='steps' "
                    f"(pass --{steps_field} N), got {steps!r}")

    def _check_best_model(self) -> None:
        if self.load_best_model_at_end:
            require(self.eval_strategy != "no", "load_best_model_at_end",
                    "needs evaluations: set --eval_strategy steps or epoch")
            require(self.save_strategy == self.eval_strategy, "load_best_model_at_end",
                    f"needs save_strategy == eval_strategy so every evaluated model is saved, got "
                    f"save_strategy={self.save_strategy!r}, eval_strategy={self.eval_strategy!r}")
            if self.eval_strategy == "steps":
                require(self.save_steps % self.eval_steps == 0, "load_best_model_at_end",
                        f"needs save_steps ({self.save_steps}) to be a multiple of eval_steps ({self.eval_steps})")
            if self.metric_for_best_model is None:
                self.metric_for_best_model = "loss"
        if self.metric_for_best_model is not None and self.greater_is_better is None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")

    @property
    def best_metric_key(self) -> Optional[str]:
        """metric_for_best_model as it appears in evaluate()'s dict, e.g. 'eval_loss'."""
        m = self.metric_for_best_model
        return None if m is None else (m if m.startswith("eval_") else f"eval_{m}")

    def warmup_steps_for(self, total_steps: int) -> int:
        """W = warmup_steps if > 0, else ceil(warmup_ratio * total_steps)."""
        return self.warmup_steps if self.warmup_steps > 0 else math.ceil(self.warmup_ratio * total_steps)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

