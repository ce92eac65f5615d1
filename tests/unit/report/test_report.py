"""The run reports: report.html (self-contained, SVG curves, example grids) and report.md."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_curve

from iqeclip.errors import UserError
from iqeclip.report import CURVE_BOX, read_examples, read_scores, save_example, write_report

ROOT = Path(__file__).resolve().parents[3]

METRICS = {
    "dataset": "Brain",
    "setting": "zero",
    "shot": None,
    "n_images": 60,
    "image_auroc": 0.912345,
    "pixel_auroc": 0.87654,
    "image_ap": 0.8,
    "pixel_ap": 0.123456,
    "image_f1_max": 0.75,
    "pixel_aupro": None,
    "note": "random backbone (--pretrain none): numbers are not meaningful",
}


def _example_arrays(rng: np.random.Generator, anomalous: bool, size: int = 48):
    yy, xx = np.mgrid[:size, :size]
    image = np.stack([xx * 4, yy * 4, np.full_like(xx, 90)], axis=-1).astype(
        np.uint8
    ) + rng.integers(0, 30, (size, size, 3), dtype=np.uint8)
    cy, cx = rng.integers(12, size - 12, 2)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0)
    amap = (0.1 * rng.random((size, size)) + (0.9 if anomalous else 0.2) * blob).astype(np.float32)
    mask = blob > 0.5 if anomalous else None
    return image, amap, mask


def make_run(
    run_dir: Path,
    *,
    labelled: bool = True,
    n_examples: int = 6,
    metrics: dict | None = None,
    example_path: str | None = None,
    seed: int = 0,
) -> Path:
    """A synthetic RUN_DIR: metrics.json, 60 scores (30 normal, 30 anomalous) and examples."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics or METRICS))
    labels = np.repeat([0, 1], 30)
    scores = rng.normal(0.3, 0.1, 60) + 0.25 * labels
    lines = ["path,slice,label,score"]
    for i, (y, s) in enumerate(zip(labels, scores, strict=True)):
        lines.append(
            f"test/img_{i:03d}.png,{'' if i % 2 else i // 2},{y if labelled else ''},{float(s)!r}"
        )
    (run_dir / "scores.csv").write_text("\n".join(lines) + "\n")
    for i in range(n_examples):
        anomalous = i % 2 == 1
        image, amap, mask = _example_arrays(rng, anomalous)
        path = example_path if (example_path and i == 0) else f"test/Ungood/img/ex_{i}.png"
        save_example(
            run_dir,
            f"ex{i}",
            image,
            amap,
            score=float(0.2 + 0.1 * i),
            label=int(anomalous) if labelled else -1,
            path=path,
            mask=mask,
        )
    return run_dir


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "run")


def test_full_report(run):
    html_path, md_path = write_report(run)
    assert html_path == run / "report.html" and md_path == run / "report.md"
    text = html_path.read_text(encoding="utf-8")
    for value in ("0.9123", "0.8765", "0.8000", "0.1235", "0.7500", ">60<"):
        assert value in text
    assert "–" in text  # pixel_aupro and shot are null
    assert METRICS["note"] in text
    assert text.count("<svg") == 3  # ROC, PR, histogram
    assert 'class="roc-curve"' in text and 'class="pr-curve"' in text
    assert "AUROC" in text and "AP " in text
    # 6 examples, 2 images each, all inline
    assert text.count('src="data:image/png;base64,') == 12 + 1  # and the colour bar
    assert "Highest-scoring" in text and "Lowest-scoring" in text
    # self-contained: nothing fetched from elsewhere, no script
    assert "http" not in text
    assert 'src="/' not in text and "href=" not in text and "<script" not in text
    assert not list(run.glob(".*.tmp"))

    md = md_path.read_text(encoding="utf-8")
    assert md.startswith("# IQE-CLIP report: Brain (zero)")
    assert "| metric | value |" in md
    assert "| Image AUROC | 0.9123 |" in md
    assert "| Pixel AUPRO | – |" in md
    assert "- **Image AUROC**: area under the ROC curve" in md
    assert "| Images | 60 |" in md
    assert "| normal | 30 |" in md and "| anomalous | 30 |" in md
    assert "![highest- and lowest-scoring examples](report_examples.png)" in md
    assert METRICS["note"] in md
    grid_png = Image.open(run / "report_examples.png")
    assert grid_png.width > 3 * 128 and grid_png.height > 4 * 128


def test_examples_split_sorted_and_disjoint(run):
    text = write_report(run, top_k=2)[0].read_text(encoding="utf-8")
    hi, lo = text.split("Lowest-scoring")
    assert text.count('src="data:image/png;base64,') == 8 + 1  # and the colour bar
    # highest: 0.7, 0.6; lowest: 0.2, 0.3
    assert re.findall(r"score (\d\.\d+)", hi) == ["0.7000", "0.6000"]
    assert re.findall(r"score (\d\.\d+)", lo) == ["0.2000", "0.3000"]
    # with more room, the two grids split the examples in halves
    text = write_report(run, top_k=8)[0].read_text(encoding="utf-8")
    hi, lo = text.split("Lowest-scoring")
    assert re.findall(r"score (\d\.\d+)", hi) == ["0.7000", "0.6000", "0.5000"]
    assert re.findall(r"score (\d\.\d+)", lo) == ["0.2000", "0.3000", "0.4000"]


def test_roc_polyline_matches_sklearn(run):
    text = write_report(run)[0].read_text(encoding="utf-8")
    points = re.search(r'class="roc-curve"[^>]*points="([^"]+)"', text).group(1)
    xy = np.array([[float(v) for v in p.split(",")] for p in points.split()])
    s = read_scores(run / "scores.csv")
    fpr, tpr, _ = roc_curve(s.labels, s.scores)
    x0, y0, w, h = CURVE_BOX
    expected = np.stack([x0 + fpr * w, y0 + (1 - tpr) * h], axis=1)
    assert xy.shape == expected.shape
    assert np.abs(xy - expected).max() <= 1.0


def test_unlabelled_scores_histogram_only(tmp_path):
    run = make_run(tmp_path / "run", labelled=False)
    html_path, md_path = write_report(run)
    text = html_path.read_text(encoding="utf-8")
    assert text.count("<svg") == 1 and 'class="histogram"' in text
    assert "roc-curve" not in text and "pr-curve" not in text
    assert "unknown (n=60)" in text
    assert "| unknown | 60 |" in md_path.read_text(encoding="utf-8")


def test_metrics_only(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"dataset": "Chest", "image_auroc": 0.5}))
    (run / "report_examples.png").write_bytes(b"stale")
    html_path, md_path = write_report(run, title="My <run>")
    text = html_path.read_text(encoding="utf-8")
    assert "<svg" not in text and "data:image" not in text
    assert "0.5000" in text and "My &lt;run&gt;" in text
    md = md_path.read_text(encoding="utf-8")
    assert "| Image AUROC | 0.5000 |" in md and "report_examples.png" not in md
    assert not (run / "report_examples.png").exists()


def test_html_escapes_user_strings(tmp_path):
    evil = "x/<script>alert(1)</script>.png"
    metrics = {**METRICS, "note": "<script>bad()</script>", "dataset": "<b>D</b>"}
    run = make_run(tmp_path / "run", metrics=metrics, example_path=evil)
    text = write_report(run)[0].read_text(encoding="utf-8")
    assert "<script" not in text and "<b>D</b>" not in text
    assert "&lt;script&gt;bad()&lt;/script&gt;" in text
    assert "&lt;/script&gt;.png" in text  # the example's caption
    assert "&lt;b&gt;D&lt;/b&gt;" in text


def test_missing_run_dir_and_metrics(tmp_path):
    with pytest.raises(UserError, match="nope"):
        write_report(tmp_path / "nope")
    with pytest.raises(UserError, match=r"metrics\.json"):
        write_report(tmp_path)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match=r"metrics\.json.*not valid JSON"):
        write_report(tmp_path)
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="one JSON object"):
        write_report(tmp_path)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("path,label,score\na.png,0,0.5\n", r"line 1: the header lacks slice"),
        ("path,slice,label,score\na.png,,0,0.5\nb.png,,0\n", r"line 3: expected 4 fields, got 3"),
        ("path,slice,label,score\na.png,,0,0.5,9\n", r"line 2: expected 4 fields, got 5"),
        ("path,slice,label,score\na.png,,2,0.5\n", r"line 2: label '2'"),
        ("path,slice,label,score\na.png,,1,abc\n", r"line 2: score 'abc' is not a number"),
        ("path,slice,label,score\n\na.png,,1,nan\n", r"line 3: score 'nan' is not finite"),
        ("", r"empty file"),
    ],
)
def test_malformed_scores_csv(tmp_path, body, match):
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "scores.csv").write_text(body)
    with pytest.raises(UserError, match=r"scores\.csv.*" + match):
        write_report(tmp_path)


def test_bad_example_file(tmp_path):
    run = make_run(tmp_path / "run", n_examples=1)
    np.savez(run / "examples" / "broken.npz", image=np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(UserError, match=r"broken\.npz.*lacks the array 'map'"):
        write_report(run)
    (run / "examples" / "broken.npz").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"broken\.npz.*not a readable"):
        write_report(run)


def test_save_example_round_trip(tmp_path):
    image = np.zeros((8, 10), np.uint8)  # grey is stored as RGB
    amap = np.linspace(0, 1, 20).reshape(4, 5)  # smaller map: resized when read
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    out = save_example(tmp_path, "a", image, amap, 0.25, 1, "dir/a.png", mask=mask)
    assert out == tmp_path / "examples" / "a.npz"
    (ex,) = read_examples(tmp_path)
    assert ex.image.shape == (8, 10, 3) and ex.amap.shape == (8, 10) and ex.mask.shape == (8, 10)
    assert (ex.score, ex.label, ex.path, ex.name) == (0.25, 1, "dir/a.png", "a")
    with pytest.raises(ValueError, match="label"):
        save_example(tmp_path, "b", image, amap, 0.1, 3, "b.png")
    with pytest.raises(ValueError, match="file name"):
        save_example(tmp_path, "../b", image, amap, 0.1, 0, "b.png")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_headless_chromium_renders_report(run, tmp_path):
    write_report(run)
    out = tmp_path / "shot.png"
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "screenshot_report.sh"), str(run), str(out)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    pixels = np.asarray(Image.open(out).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 10  # not a blank page
    assert (pixels < 100).mean() > 0.01  # text, axes and example images were drawn


def test_metrics_have_names_definitions_and_no_zero_error_bounds(tmp_path):
    metrics = {
        "dataset": "Brain",
        "setting": "few",
        "shot": 4,
        "selection": "last: the weights after the last epoch",
        "pixel_auroc": 0.81,
        "pixel_aupro": 0.0,
        "pixel_auroc_error_bound": 0.0,
        "pixel_ap_error_bound": 0.0,
        "pixel_aupro_error_bound": 0.002,
    }
    run = make_run(tmp_path / "run", metrics=metrics)
    html_path, md_path = write_report(run)
    text, md = html_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8")
    for document in (text, md):
        assert "Pixel AUROC" in document and "Pixel AUPRO" in document
        assert "pixel_auroc" not in document.replace("pixel_auroc_", "")  # the raw key is gone
        assert "Pixel AUROC error bound" not in document  # 0: the exact computation
        assert "Pixel AUPRO error bound" in document  # not 0: shown
        assert "per-region-overlap" in document  # AUPRO's definition
        assert "last: the weights after the last epoch" in document  # the selection rule
    assert 'title="area under the ROC curve of the map values' in text  # on hover, too
    assert "| normal | 30 |" in md and "| anomalous | 30 |" in md and "unknown" not in md
    assert "<h2>Test set</h2>" in text


def test_every_map_figure_has_a_colour_bar(run):
    from iqeclip.report.heatmaps import _ANCHORS

    write_report(run)
    picture = np.asarray(Image.open(run / "report_examples.png").convert("RGB"))
    # the bar: a column whose top is the ramp's last colour and bottom its first
    top, bottom = _ANCHORS[-1].astype(np.uint8), _ANCHORS[0].astype(np.uint8)
    columns = [
        x
        for x in range(picture.shape[1])
        if (picture[:, x] == top).all(axis=1).any() and (picture[:, x] == bottom).all(axis=1).any()
    ]
    assert columns and min(columns) > picture.shape[1] * 0.7  # at the right of the grid
    text = (run / "report.html").read_text(encoding="utf-8")
    assert 'alt="colour bar: map value' in text
