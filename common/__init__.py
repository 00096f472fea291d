"""Shared building blocks of minibert and minigpt: attention, masks, blocks, losses,
tokenizers, data, the Trainer and checkpoints. Each module is one concept; read them in
that order."""
