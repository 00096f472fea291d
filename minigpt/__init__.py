"""minigpt: GPT, a causal language model built from common/."""
from minigpt.config import GPTConfig
from minigpt.generate import generate
from minigpt.model import GPT, GPTForSequenceClassification

__all__ = ["GPT", "GPTConfig", "GPTForSequenceClassification", "generate"]
