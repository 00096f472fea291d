"""Settings shared by every test file.

Hypothesis profiles: "default" is loaded unless HYPOTHESIS_PROFILE names another; "ci" is the
same today, kept separate so CI can be tuned without touching local runs. deadline=None because
the first call of a torch op (kernel selection, lazy init) can take far longer than the rest.
"""
import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("default", deadline=None, max_examples=30)
settings.register_profile("ci", deadline=None, max_examples=30)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same global RNG state, so a failure reproduces."""
    torch.manual_seed(0)
