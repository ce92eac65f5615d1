"""Paper-compatible entry point: `python train_zero.py` with the flags of the IQE-CLIP README.

Same as `iqeclip train-zero ...`; see `iqeclip train-zero --help`.
"""

import sys

from iqeclip.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train-zero", *sys.argv[1:]]))
