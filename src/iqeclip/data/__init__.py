"""Data: the MVFA/BMAD folder layout and support lists, the readers of every file format, input
validation, augmentation, datasets and the synthetic benchmark."""
