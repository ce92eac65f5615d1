"""A checkpoint of the published IQE-CLIP code through the command line: import-checkpoint
writes an iqeclip checkpoint that test-*, calibrate, predict and export take unchanged, it
scores exactly as the detector built from the file in Python, and export-checkpoint gives the
file back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from iqeclip.cli.main import main
from iqeclip.model.checkpoint import read_checkpoint
from iqeclip.model.detector import IQEClip
from tests.integration.conftest import MODEL, predict_argv
from tests.unit.model.published_files import flat, write_published


def test_a_published_checkpoint_end_to_end(bench, tmp_path, capsys):
    source = write_published(tmp_path / "Brain.pth")
    ckpt = tmp_path / "ck" / "Brain.pth"
    argv = ["import-checkpoint", str(source), "--out", str(ckpt), "--obj", "Brain", *MODEL]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "read off the tensors: prompt_len 2, deep_prompt_len 1" in said
    assert "assumed (give the flag if it differs): use_global False" in said
    assert (
        "left out: New_Lan_Embed.prompt_linear1.fc.bias" in said
        and "prompt_text_projection" in said
    )
    assert main(argv) == 2  # never overwritten without being asked
    assert "exists; pass --overwrite" in capsys.readouterr().err

    metrics = tmp_path / "test.json"
    test = ["test-zero", "--data_path", str(bench), "--ckpt_path", str(ckpt)]
    assert main([*test, "--metrics_json", str(metrics), "--log_path", str(tmp_path / "t")]) == 0
    assert 0.0 <= json.loads(metrics.read_text())["image_auroc"] <= 1.0

    normal = bench / "Brain_AD" / "valid" / "good" / "img"
    assert main(["calibrate", "--ckpt_path", str(ckpt), "--normal", str(normal)]) == 0
    assert read_checkpoint(ckpt)[2]["thresholds"]["image"] is not None

    out = tmp_path / "pred"
    assert main(predict_argv(ckpt, normal, out=out)) == 0
    with (out / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    model = IQEClip.from_published(source, model_name="iqe-tiny", pretrain="none", img_size=64)
    from iqeclip.data.readers import model_input

    first = Path(rows[0]["path"])
    image = model_input(first, None, 64).float()[None] / 255
    with torch.no_grad():
        _, score = model.predict(image, "zero")
    assert float(rows[0]["score"]) == pytest.approx(float(score[0]), abs=1e-6)

    onnx = tmp_path / "model.onnx"
    pytest.importorskip("onnxruntime")
    assert main(["export", "--ckpt_path", str(ckpt), "--out", str(onnx)]) == 0
    assert onnx.is_file()

    back = tmp_path / "back.pth"
    assert main(["export-checkpoint", "--ckpt_path", str(ckpt), "--out", str(back)]) == 0
    original, again = flat(torch.load(str(source))), flat(torch.load(str(back)))
    assert torch.equal(
        original["iqm.encoder.layer.3.output_query.dense.weight"],
        again["iqm.encoder.layer.3.output_query.dense.weight"],
    )


def test_a_file_that_would_run_code_is_refused_in_one_line(tmp_path, capsys):
    evil = tmp_path / "evil.pth"
    torch.save({"trainable_linearlayer": print}, str(evil))
    out = tmp_path / "ck.pth"
    assert main(["import-checkpoint", str(evil), "--out", str(out), *MODEL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be read as tensors and dicts alone" in err[0]
    assert not out.exists()
