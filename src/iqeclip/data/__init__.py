"""Data: the MVFA/BMAD folder layout, image and mask reading, few-shot support, augmentation and
the synthetic benchmark."""
