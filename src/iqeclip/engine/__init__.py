"""Training: the trainer (one epoch loop), the zero- and few-shot workflows, evaluation of a split,
the frozen-feature cache and the resumable training state."""
