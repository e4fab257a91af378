"""Train an agent: python train.py --config configs/agents/mdpo_on/Hopper-v5.yaml [key=value ...]"""

import sys

from rlopt.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
