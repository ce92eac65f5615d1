"""``iqeclip export`` and ``--backend onnx``: the ONNX graph scores as PyTorch does (maps and
both image scores within 1e-4, any batch size), carries the checkpoint's configuration and
calibration, and predict runs it through the same readers and writers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from iqeclip.cli.main import main
from iqeclip.config import ModelConfig
from iqeclip.errors import UserError
from iqeclip.model.detector import IQEClip

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from iqeclip.inference.export import META_KEYS, OnnxDetector, export_onnx  # noqa: E402

TOLERANCE = 1e-4


def assert_scores_like_pytorch(model: IQEClip, detector: OnnxDetector) -> None:
    size = model.config.img_size
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 3):
        images = torch.rand(batch, 3, size, size, generator=generator)
        for setting in ("zero", "few"):
            maps, scores = model.predict(images, setting)
            got_maps, got_scores = detector.predict(images, setting)
            assert got_maps.shape == maps.shape == (batch, size, size)
            assert got_scores.shape == scores.shape == (batch,)
            assert (got_maps - maps).abs().max() <= TOLERANCE
            assert (got_scores - scores).abs().max() <= TOLERANCE


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", "--ckpt_path", str(checkpoint), "--out", str(out)]) == 0
    return out


def test_export_scores_like_pytorch_and_keeps_the_metadata(checkpoint, exported):
    model = IQEClip.from_checkpoint(checkpoint)
    detector = OnnxDetector(exported)
    assert detector.config == model.config
    assert detector.meta == model.meta
    assert_scores_like_pytorch(model, detector)
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props[META_KEYS["config"]]) == model.config.to_dict()
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"  # a dynamic batch dimension, not a fixed one


@pytest.mark.slow
def test_vit_b16_random_init_exports_within_tolerance(tmp_path):
    model = IQEClip.build(ModelConfig(model_name="ViT-B-16", pretrain="none", img_size=96))
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking head, not the initial one
        for p in model.head.parameters():
            p.add_(0.02 * torch.randn_like(p))
    detector = OnnxDetector(export_onnx(model, tmp_path / "vitb16.onnx"))
    assert_scores_like_pytorch(model, detector)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_predict_backend_onnx_writes_what_the_torch_path_writes(
    checkpoint, exported, bench, tmp_path
):
    images = bench / "Brain_AD" / "test" / "Ungood" / "img"
    torch_out, onnx_out = tmp_path / "torch", tmp_path / "onnx"
    base = ["predict", str(images), "--setting", "zero"]
    assert main([*base, "--ckpt_path", str(checkpoint), "--out", str(torch_out)]) == 0
    assert main([*base, "--backend", "onnx", "--model", str(exported), "--out", str(onnx_out)]) == 0
    mine, theirs = _rows(onnx_out / "predictions.csv"), _rows(torch_out / "predictions.csv")
    assert [r["outputs"] for r in mine] == [r["outputs"] for r in theirs]
    for a, b in zip(mine, theirs, strict=True):
        assert abs(float(a["score"]) - float(b["score"])) <= TOLERANCE
    assert sorted(p.name for p in onnx_out.iterdir()) == sorted(p.name for p in torch_out.iterdir())


def test_backend_flags_are_checked(checkpoint, exported, tmp_path, capsys):
    out = str(tmp_path / "out")
    image = str(tmp_path / "x.png")
    cases = {
        ("--backend", "onnx"): "--backend onnx needs --model",
        ("--model", str(exported), "--ckpt_path", str(checkpoint)): "--model is an exported",
        ("--backend", "onnx", "--model", str(exported), "--ckpt_path", str(checkpoint)): (
            "--backend onnx: --ckpt_path has no effect"
        ),
        ("--backend", "onnx", "--model", str(checkpoint)): "not a readable ONNX model",
    }
    for flags, message in cases.items():
        assert main(["predict", image, "--out", out, *flags]) == 2
        assert message in capsys.readouterr().err
    assert main(["predict", image, "--out", out]) == 2
    assert "--ckpt_path is required" in capsys.readouterr().err


def test_a_foreign_onnx_file_is_refused(tmp_path):
    path = tmp_path / "identity.onnx"
    h = onnx.helper
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])
    graph = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 18)]), str(path))
    with pytest.raises(UserError, match="not exported by iqeclip export"):
        OnnxDetector(path)


def test_export_refuses_an_existing_file_before_building(checkpoint, exported, capsys):
    before = exported.stat().st_mtime_ns
    assert main(["export", "--ckpt_path", str(checkpoint), "--out", str(exported)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert exported.stat().st_mtime_ns == before


def test_benchmark_backend_onnx_reports_the_ratio_with_equal_threads(capsys):
    argv = ["benchmark", "--model_name", "iqe-tiny", "--img_size", "64"]
    assert main([*argv, "--batch_size", "2", "--n_images", "2", "--backend", "onnx"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["onnx_threads"] == result["torch_threads"]
    assert result["onnx_max_map_deviation"] <= TOLERANCE
    expected = result["onnx_ms_per_image"] / result["inference_ms_per_image"]
    assert result["onnx_over_inference"] == pytest.approx(expected, rel=0.02, abs=0.01)
