"""The paper's model: pure modules, tensors in and out.

backbone (frozen CLIP taps), weights (weight files), prompts (class-based and deep text prompts), iqm
(instance-aware query module), detector (IQEHead, IQEClip), scoring (maps and image scores), losses,
checkpoint. Imports nothing from the rest of the package but config, errors and runtime.
"""
