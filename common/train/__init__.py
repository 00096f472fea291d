"""The one training loop, in reading order:

    args.py         TrainingArguments (transformers' names)
    optim.py        AdamW with weight-decay groups; warmup + decay schedules (to 0 or to a floor)
    columns.py      which dataset columns reach forward (remove_unused_columns); heads with a loss
    utils.py        callbacks, log windows, gradient accumulation as one big batch
    time_budget.py  --max_time: the learning rate decays over the wall-clock budget
    device.py       CPU / CUDA / torchrun, bf16 autocast, RNG state
    checkpoints.py  checkpoint-<step>/ folders: weights, optimizer, scheduler, RNG; resume
    trainer.py      Trainer: train, evaluate, predict
"""
