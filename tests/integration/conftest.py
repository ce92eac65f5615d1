"""What this machine adds to the paper's commands: a small random-init backbone."""

MODEL = ["--model_name", "iqe-tiny", "--pretrain", "none", "--img_size", "64"]
