"""``python -m iqeclip`` (and so ``torchrun -m iqeclip``)."""

import sys

from iqeclip.cli.main import main

sys.exit(main())
