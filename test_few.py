"""Paper-compatible entry point: `python test_few.py` with the flags of the IQE-CLIP README.

Same as `iqeclip test-few ...`; see `iqeclip test-few --help`.
"""

import sys

from iqeclip.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["test-few", *sys.argv[1:]]))
