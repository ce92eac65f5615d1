"""The run folder of a test, written from the test's values alone (no model, no second pass)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from iqeclip.report import read_examples, read_scores
from iqeclip.report.run import RANDOM_NOTE, write_test_report


def _result() -> SimpleNamespace:
    """What run_test gives, for three images of which two are examples (one with a mask)."""
    samples = [
        SimpleNamespace(image=Path("/d/a.png"), index=None, mask=None),
        SimpleNamespace(image=Path("/d/vol.nii.gz"), index=3, mask=Path("/d/m.nii.gz")),
        SimpleNamespace(image=Path("/d/c.png"), index=None, mask=None),
    ]
    rng = np.random.default_rng(0)
    amap = rng.random((16, 16)).astype(np.float32)
    examples = [
        SimpleNamespace(
            sample=samples[i],
            score=score,
            label=label,
            image=np.full((16, 16, 3), 40 * i, np.uint8),
            amap=amap * (i + 1),
            mask=None if samples[i].mask is None else amap > 0.5,
        )
        for i, score, label in ((0, 0.25, 0), (1, 0.875, 1))
    ]
    return SimpleNamespace(
        metrics={"image_auroc": 0.5, "pixel_aupro": float("nan"), "n_images": 3},
        samples=samples,
        scores=np.array([0.25, 0.875, 0.5]),
        labels=np.array([0, 1, 0]),
        pixel_histograms=np.ones((3, 2, 4), np.int64),
        examples=examples,
        top_k=8,
    )


def test_the_run_folder_is_written_from_the_values(tmp_path):
    result = _result()
    html = write_test_report(
        tmp_path,
        result,
        dataset="Brain",
        setting="few",
        shot=2,
        checkpoint="ck/Brain_2.pth",
        pretrain="none",
        selection="last",
    )
    assert html == tmp_path / "report.html" and html.is_file()
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert list(record) == [
        "dataset",
        "setting",
        "shot",
        "image_auroc",
        "n_images",  # NaN metrics are left out
        "selection",
        "note",
        "checkpoint",
    ]
    assert record["selection"].startswith("last: ") and record["note"] == RANDOM_NOTE
    assert (tmp_path / "scores.csv").read_text().splitlines() == [
        "path,slice,label,score",
        "/d/a.png,,0,0.250000",
        "/d/vol.nii.gz,3,1,0.875000",
        "/d/c.png,,0,0.500000",
    ]
    assert read_scores(tmp_path / "scores.csv").scores.tolist() == [0.25, 0.875, 0.5]
    assert np.array_equal(np.load(tmp_path / "pixel_histograms.npy"), result.pixel_histograms)
    names = sorted(p.name for p in (tmp_path / "examples").iterdir())
    assert names == ["000_a.npz", "001_vol.nii.npz"]
    shown = {e.path: e for e in read_examples(tmp_path)}
    for given in result.examples:
        kept = shown[str(given.sample.image)]
        assert kept.score == given.score and kept.label == given.label
        assert np.array_equal(kept.image, given.image) and np.allclose(kept.amap, given.amap)
        assert (kept.mask is None) == (given.mask is None)


def test_pretrained_weights_get_no_note(tmp_path):
    result = _result()
    result.pixel_histograms = None
    write_test_report(
        tmp_path,
        result,
        dataset="Chest",
        setting="zero",
        shot=0,
        checkpoint="Chest.pth",
        pretrain="openai",
        selection="source-val",
    )
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert "note" not in record and record["shot"] == 0
    assert not (tmp_path / "pixel_histograms.npy").exists()
