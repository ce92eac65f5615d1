"""A bank of normal images on a zero-shot checkpoint, through the command line: built, stored
in the checkpoint and read back exactly, used by predict, calibrate, test-zero and the ONNX
export as the fused rule says, refused in one line when tampered with."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from iqeclip.cli.main import main
from iqeclip.data.readers import as_input, model_input
from iqeclip.model.bank import nearest_distance
from iqeclip.model.checkpoint import read_checkpoint
from iqeclip.model.detector import IQEClip
from iqeclip.model.scoring import gaussian_blur
from tests.integration.conftest import MODEL, predict_argv
from tests.unit.model.published_files import write_published


@pytest.fixture(scope="module")
def zero_shot(tmp_path_factory) -> Path:
    """A zero-shot iqe-tiny checkpoint (a published-layout file, imported)."""
    folder = tmp_path_factory.mktemp("zero")
    source = write_published(folder / "Brain.pth")
    ckpt = folder / "Brain.pth.iqeclip"
    assert main(["import-checkpoint", str(source), "--out", str(ckpt), *MODEL]) == 0
    return ckpt


@pytest.fixture(scope="module")
def banked(zero_shot, bench, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bank") / "Brain_bank.pth"
    normal = bench / "Brain_AD" / "valid" / "good" / "img"
    argv = ["bank", "--ckpt_path", str(zero_shot), "--normal", str(normal), "--out", str(out)]
    assert main([*argv, "--bank_size", "40", "--bank_weight", "0.4"]) == 0
    return out


def test_the_bank_is_stored_with_its_images(banked, bench):
    _, state, meta = read_checkpoint(banked)
    record = meta["bank"]
    normal = sorted((bench / "Brain_AD" / "valid" / "good" / "img").iterdir())
    assert [Path(i["file"]).name for i in record["images"]] == [p.name for p in normal]
    for image, path in zip(record["images"], normal, strict=True):
        assert image["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["sizes"] == [40, 40, 40, 40] and record["weight"] == 0.4
    assert record["patches"] == len(normal) * (64 // 16) ** 2  # every patch went in
    model = IQEClip.from_checkpoint(banked)
    for level in range(4):
        assert torch.equal(model.bank.levels[level], state[f"bank.{level}"])
    assert "thresholds" not in meta


def test_predict_scores_by_the_fused_rule(banked, zero_shot, bench, tmp_path):
    image = next((bench / "Brain_AD" / "test" / "Ungood" / "img").iterdir())
    out = tmp_path / "out"
    assert main(predict_argv(banked, image, out=out)) == 0
    with (out / "predictions.csv").open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    plain = IQEClip.from_checkpoint(zero_shot)
    batch = as_input(model_input(image, None, 64)[None], plain.device)
    with torch.no_grad():
        maps, scores = plain.predict(batch, "zero")
        taps, _ = plain.features(batch)
        units = F.normalize(plain.head.dense(taps), dim=-1)
    banked_model = IQEClip.from_checkpoint(banked)
    distance = torch.stack(
        [nearest_distance(units[t], banked_model.bank.levels[t]) for t in range(4)]
    ).mean(dim=0)
    expected = 0.6 * scores + 0.4 * distance.amax(dim=1)
    assert float(row["score"]) == pytest.approx(float(expected[0]), abs=1e-5)
    assert float(row["score"]) != pytest.approx(float(scores[0]), abs=1e-3)
    up = F.interpolate(
        distance.reshape(1, 1, 4, 4), size=(64, 64), mode="bilinear", align_corners=True
    )
    with torch.no_grad():
        fused, _ = banked_model.predict(batch, "zero")
    torch.testing.assert_close(fused, 0.6 * maps + 0.4 * gaussian_blur(up[:, 0]))


def test_calibrate_and_test_take_a_banked_checkpoint(banked, bench, tmp_path):
    normal = bench / "Brain_AD" / "valid" / "good" / "img"
    ckpt = tmp_path / "Brain_bank.pth"
    ckpt.write_bytes(banked.read_bytes())
    assert main(["calibrate", "--ckpt_path", str(ckpt), "--normal", str(normal)]) == 0
    assert read_checkpoint(ckpt)[2]["bank"]["sizes"] == [40] * 4  # kept through calibrate
    metrics = tmp_path / "m.json"
    argv = ["test-zero", "--data_path", str(bench), "--ckpt_path", str(ckpt)]
    assert main([*argv, "--metrics_json", str(metrics), "--log_path", str(tmp_path / "l")]) == 0
    assert 0.0 <= json.loads(metrics.read_text())["image_auroc"] <= 1.0


def test_onnx_export_carries_the_bank(banked, bench, tmp_path):
    pytest.importorskip("onnxruntime")
    from iqeclip.inference.detectors import OnnxDetector

    onnx = tmp_path / "bank.onnx"
    assert main(["export", "--ckpt_path", str(banked), "--out", str(onnx)]) == 0
    image = next((bench / "Brain_AD" / "test" / "Ungood" / "img").iterdir())
    batch = model_input(image, None, 64)[None].float() / 255
    maps, scores = OnnxDetector(onnx).predict(batch, "zero")
    with torch.no_grad():
        expected_maps, expected = IQEClip.from_checkpoint(banked).predict(batch, "zero")
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(maps, expected_maps, atol=1e-4, rtol=1e-4)


def test_a_tampered_bank_stops_predict_in_one_line(banked, bench, tmp_path, capsys):
    with safe_open(str(banked), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(str(banked))
    state["bank.2"] = state["bank.2"] * 1.5
    tampered = tmp_path / "tampered.pth"
    save_file(state, str(tampered), metadata=metadata)
    image = next((bench / "Brain_AD" / "test" / "good" / "img").iterdir())
    assert main(predict_argv(tampered, image, out=tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bank bank.2 holds entries that are not unit vectors" in err[0]


def test_a_few_shot_checkpoint_takes_no_bank(checkpoint, bench, tmp_path, capsys):
    normal = bench / "Brain_AD" / "valid" / "good" / "img"
    out = tmp_path / "b.pth"
    argv = ["bank", "--ckpt_path", str(checkpoint), "--normal", str(normal), "--out", str(out)]
    assert main(argv) == 2
    assert "is a few-shot checkpoint" in capsys.readouterr().err and not out.exists()
