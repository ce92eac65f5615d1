"""Where and how a run computes: device and seeds, torch.distributed helpers, atomic file writes."""

import os


def launched_by_torchrun() -> bool:
    """True under ``torchrun`` with more than one process (read from the environment, no torch)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1
