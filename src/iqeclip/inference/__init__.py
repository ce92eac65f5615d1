"""Using a trained checkpoint: test a split, predict on your own files, calibrate thresholds."""
