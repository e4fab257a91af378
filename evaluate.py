"""Evaluate a run: python evaluate.py runs/x [--episodes 10] [--video] [--checkpoint step_N]"""

import sys

from rlopt.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
