"""``iqeclip export`` and ``--backend onnx``: the ONNX graph scores as PyTorch does (maps and
both image scores within 1e-4, any batch size), carries the checkpoint's configuration and
calibration, and predict runs it through the same readers and writers; a file whose metadata or
graph was edited is refused in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqeclip.cli.main import main
from iqeclip.config import ModelConfig
from iqeclip.errors import UserError
from iqeclip.model.checkpoint import save_checkpoint
from iqeclip.model.detector import IQEClip
from tests.conftest import build_tiny

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from iqeclip.inference.detectors import META_KEYS, OnnxDetector, load_detector  # noqa: E402
from iqeclip.inference.export import export_onnx  # noqa: E402

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


def test_export_refuses_a_checkpoint_with_non_finite_weights(tmp_path, capsys):
    model = build_tiny()
    with torch.no_grad():
        model.head.projections[0].weight[0, :2] = float("nan")
    ckpt = save_checkpoint(tmp_path / "nan.pth", model)
    out = tmp_path / "nan.onnx"
    assert main(["export", "--ckpt_path", str(ckpt), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --ckpt_path {ckpt}: tensor projections.0.weight holds 2 non-finite values "
        "(NaN/inf): the checkpoint is corrupt"
    ]
    assert not out.exists()


def _edited(exported: Path, out: Path, config=None, meta=None, graph=None) -> Path:
    """A copy of ``exported`` whose ``iqeclip.config``/``iqeclip.meta`` metadata are replaced
    (a string as is, else as JSON of the stored value changed by the callable) and whose
    graph ``graph`` edits."""
    proto = onnx.load(str(exported))
    for entry in proto.metadata_props:
        change = {META_KEYS["config"]: config, META_KEYS["meta"]: meta}.get(entry.key)
        if isinstance(change, str):
            entry.value = change
        elif change is not None:
            entry.value = json.dumps(change(json.loads(entry.value)))
    if graph is not None:
        graph(proto.graph)
    onnx.save(proto, str(out))
    return out


NOT_JSON = "not JSON (Expecting property name enclosed in double quotes)"


def _dims(value_info) -> list:
    return value_info.type.tensor_type.shape.dim


def _nan_weight(graph) -> None:
    """One weight of the exported backbone made NaN, as a corrupt file would hold it."""
    from onnx import numpy_helper

    (tensor,) = [t for t in graph.initializer if t.name == "model.backbone.proj"]
    values = numpy_helper.to_array(tensor).copy()
    values.flat[0] = np.nan
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))


def _calibration(**changes):
    record = {"image": 0.5, "rule": "f1", "n_images": 4, "source": "x", **changes}
    return lambda meta: {**meta, "thresholds": record}


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        (
            {"config": "{img_size: 64"},
            f"its iqeclip.config metadata is {NOT_JSON}",
        ),
        ({"config": "64"}, "its iqeclip.config metadata is not a JSON object (got int)"),
        (
            {"meta": "{'run': {}}"},
            f"its iqeclip.meta metadata is {NOT_JSON}",
        ),
        ({"meta": '{"run": "few"}'}, "its iqeclip.meta.run is 'few', not a JSON object"),
        (
            {"config": lambda c: {**c, "img_size": 20000}},
            "its stored model configuration is invalid: img_size must be in [8, 1024], got 20000",
        ),
        (
            {"config": lambda c: {**c, "img_size": "abc"}},
            "its stored model configuration is invalid: img_size must be int, got 'abc'",
        ),
        (
            {"config": lambda c: {**c, "img_size": 96}},
            "the graph's images is tensor(float) (batch, 3, 64, 64), not float32 "
            "(batch, 3, 96, 96) as its iqeclip.config (img_size 96) says",
        ),
        (
            {"meta": _calibration(image=float("nan"))},
            "the stored calibration is corrupt: thresholds.image is nan, not a finite number",
        ),
        (
            {"meta": _calibration(pixel="0.3")},
            "the stored calibration is corrupt: thresholds.pixel is '0.3', not a finite number",
        ),
        (
            {"graph": lambda g: g.output.remove(g.output[2])},
            "the graph has no output score_few (iqeclip export writes maps, score_zero, score_few)",
        ),
        (
            {"graph": lambda g: _dims(g.output[0])[1].__setattr__("dim_value", 32)},
            "the graph's maps is tensor(float) (batch, 32, 64), not float32 (batch, 64, 64) "
            "as its iqeclip.config (img_size 64) says",
        ),
        (
            {"graph": _nan_weight},
            "initializer model.backbone.proj holds 1 non-finite values (NaN/inf): the model is "
            "corrupt",
        ),
        (
            {"meta": lambda meta: {**meta, "run": {**meta["run"], "setting": "median"}}},
            "its iqeclip.meta.run.setting is 'median': not one of zero, few (the checkpoint is "
            "corrupt)",
        ),
        (
            {"graph": lambda g: _dims(g.input[0])[0].__setattr__("dim_value", 1)},
            "the graph's images is tensor(float) (1, 3, 64, 64), not float32 "
            "(batch, 3, 64, 64) as its iqeclip.config (img_size 64) says",
        ),
    ],
)
def test_an_edited_onnx_file_is_refused_in_one_line(exported, tmp_path, edits, message):
    path = _edited(exported, tmp_path / "edited.onnx", **edits)
    with pytest.raises(UserError) as caught:
        OnnxDetector(path)
    assert str(caught.value) == f"model {path}: {message}"


def test_predict_and_serve_refuse_an_onnx_file_whose_config_disagrees_with_its_graph(
    exported, tmp_path, capsys
):
    """It tracebacked in predict, and serve started and answered every upload 500."""
    path = _edited(exported, tmp_path / "240.onnx", config=lambda c: {**c, "img_size": 240})
    image = tmp_path / "x.png"
    Image.new("RGB", (64, 64)).save(image)
    out = tmp_path / "out"
    argv = ["predict", str(image), "--backend", "onnx", "--model", str(path), "--out", str(out)]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --model {path}: the graph's images is tensor(float) (batch, 3, 64, 64), not "
        "float32 (batch, 3, 240, 240) as its iqeclip.config (img_size 240) says"
    ]
    assert not out.exists()
    with pytest.raises(UserError, match="the graph's images is"):
        load_detector("onnx", None, path, "cpu")  # what serve --backend onnx loads with
