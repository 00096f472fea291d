"""minigpt: GPT, a causal language model built from common/."""
