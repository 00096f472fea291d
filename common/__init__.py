"""What minibert, minigpt and minit5 share, one concern per sub-package, bottom to top:

    common/errors.py   the error types every layer raises (one line for the user, never a traceback)
    common/nn/         the math the course teaches: attention, masks, blocks, losses, dropout
    common/text/       tokenizers: characters, WordPiece, SentencePiece
    common/data/       datasets and collators: blocks of text, NSP pairs, MLM masking, labeled files
    common/hub/        configs (config.json) and save_pretrained / from_pretrained (safetensors)
    common/generation/ the one generation loop (greedy, sampling, beam search), streamers, speculative decoding
    common/train/      TrainingArguments, the Trainer, its checkpoints, optimizer and schedules, device
    common/cli/        what every command-line tool shares: flags, config overrides, plots

Each layer imports only the layers above it in this list; docs/architecture.md states the rule and
tests/test_architecture.py enforces it.
"""
