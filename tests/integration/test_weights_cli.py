"""A weights file of another architecture: one line naming the file, in every command that builds
the backbone, before any work starts."""

from __future__ import annotations

import pytest
import torch

from iqeclip.cli.main import main
from iqeclip.model.backbone import create_clip


@pytest.fixture(scope="module")
def b32_file(tmp_path_factory):
    """A ViT-B-32 state dict in fp16 (zeros: only keys and shapes matter here)."""
    meta = create_clip("ViT-B-32", "none", 224, quick_gelu=False, device="meta")
    path = tmp_path_factory.mktemp("b32") / "ViT-B-32.pt"
    torch.save(
        {k: torch.zeros(v.shape, dtype=torch.float16) for k, v in meta.state_dict().items()}, path
    )
    return path


def _one_line_error(capsys, argv, expected_arch):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    path = argv[argv.index("--pretrain") + 1]
    assert err.startswith(f"error: --pretrain {path}: weights do not fit {expected_arch}: ")
    assert "the file holds ViT-B-32 (patch 32, width 768, 12 vision blocks, 224 px" in err
    return err


def test_benchmark_and_info(b32_file, capsys):
    wrong = ["--model_name", "ViT-B-16", "--pretrain", str(b32_file)]
    err = _one_line_error(capsys, ["benchmark", *wrong, "--n_images", "1"], "ViT-B-16")
    assert "visual.conv1.weight is [768, 3, 32, 32] there, ViT-B-16 needs [768, 3, 16, 16]" in err
    _one_line_error(capsys, ["info", *wrong], "ViT-B-16")


def test_train_fails_before_writing_anything(bench, b32_file, tmp_path, capsys):
    save = tmp_path / "ckpt"
    argv = ["train-zero", "--data_path", str(bench), "--model_name", "ViT-B-16"]
    argv += ["--pretrain", str(b32_file), "--img_size", "64", "--epoch", "1"]
    _one_line_error(
        capsys, [*argv, "--save_dir", str(save), "--log_path", str(tmp_path / "log")], "ViT-B-16"
    )
    assert not save.exists() or not any(save.iterdir())


def test_predict_with_moved_weights(bench, checkpoint, b32_file, tmp_path, capsys):
    image = next((bench / "Brain_AD" / "test" / "good" / "img").iterdir())
    argv = ["predict", "--ckpt_path", str(checkpoint), "--pretrain", str(b32_file)]
    _one_line_error(capsys, [*argv, "--out", str(tmp_path / "out"), str(image)], "iqe-tiny")
