"""Where and how a run computes: device and seeds, torch.distributed helpers, atomic file writes."""
