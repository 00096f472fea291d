"""`import _setup` in a Chinese tutorial (tutorials/zh/NN_name.py) gives tutorials/_setup.py itself.

The Chinese tutorials share the English ones' code cells character for character, `import _setup`
included; run as `python tutorials/zh/NN_name.py`, Python looks for `_setup` here first. This file
loads the one set-up module of the course under the same name (nothing is copied), so ROOT, QUICK,
OUT, seed and save_plot are the English tutorials' ones.
"""
import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_setup", Path(__file__).resolve().parents[1] / "_setup.py")
_module = importlib.util.module_from_spec(_spec)
sys.modules[__name__] = _module  # `import _setup` returns what sys.modules holds after this file ran
_spec.loader.exec_module(_module)
