"""python -m demo: the same as python -m demo."""
from common.errors import run_cli
from demo.main import main

if __name__ == "__main__":
    run_cli(main)
