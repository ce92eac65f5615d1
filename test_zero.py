"""Paper-compatible entry point: `python test_zero.py` with the flags of the IQE-CLIP README.

Same as `iqeclip test-zero ...`; see `iqeclip test-zero --help`.
"""

import sys

from iqeclip.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["test-zero", *sys.argv[1:]]))
