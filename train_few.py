"""Paper-compatible entry point: `python train_few.py` with the flags of the IQE-CLIP README.

Same as `iqeclip train-few ...`; see `iqeclip train-few --help`.
"""

import sys

from iqeclip.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train-few", *sys.argv[1:]]))
