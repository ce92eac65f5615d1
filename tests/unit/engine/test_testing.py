"""The final test (engine.testing): one scoring pass, examples kept while it streams."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from iqeclip.config import RunConfig
from iqeclip.data.datasets import ImageDataset
from iqeclip.data.layout import list_split
from iqeclip.data.synth import write_benchmark
from iqeclip.engine.evaluate import KeptMaps, predict_samples
from iqeclip.engine.runlog import RunLog
from iqeclip.engine.testing import TOP_K, ExampleKeeper, require_writer, run_test
from tests.conftest import build_tiny


def _argsort_rule(scores: np.ndarray, k: int) -> list[int]:
    """The report's examples before the keeper: both ends of ``np.argsort``."""
    order = np.argsort(scores)
    return sorted(set(order[-k:].tolist()) | set(order[:k].tolist()))


def _stream(scores: np.ndarray, k: int, sizes: list[int]) -> ExampleKeeper:
    """Feed ``scores`` to a keeper in batches of ``sizes``; image, map and mask of image ``i``
    all hold ``i``."""
    keeper = ExampleKeeper(k)
    start = 0
    for size in sizes:
        rows = np.arange(start, min(start + size, len(scores)))
        if not len(rows):
            break
        images = np.broadcast_to(rows[:, None, None, None] % 256, (len(rows), 3, 4, 4))
        maps = np.broadcast_to(rows[:, None, None], (len(rows), 4, 4)).astype(np.float32)
        keeper(start, scores[rows], images.astype(np.uint8), maps, maps % 2 == 1)
        start = rows[-1] + 1
    return keeper


@pytest.mark.parametrize("seed", range(40))
def test_the_keeper_picks_what_argsort_picks_ties_included(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    k = int(rng.integers(1, 10))
    # few distinct values: many ties at both ends, which np.argsort breaks its own way
    scores = rng.integers(0, int(rng.integers(1, 6)), n).astype(np.float64)
    if seed % 5 == 0:
        scores[rng.integers(0, n)] = np.nan  # argsort puts NaN last
    sizes = rng.integers(1, 9, n).tolist()
    keeper = _stream(scores, k, sizes)
    # odd samples have a mask file
    samples = [SimpleNamespace(mask="m" if i % 2 else None) for i in range(n)]
    examples = keeper.examples(samples, scores, np.arange(n) % 2)
    assert [e.index for e in examples] == _argsort_rule(scores, k)
    for e in examples:
        assert np.all(e.amap == e.index) and e.image.shape == (4, 4, 3)
        assert np.all(e.image == e.index % 256) and e.label == e.index % 2
        assert (e.mask is None) == (e.index % 2 == 0) and (e.mask is None or e.mask.all())
        assert e.score == scores[e.index] or (math.isnan(e.score) and math.isnan(scores[e.index]))


def test_the_keeper_holds_no_more_than_both_ends_without_ties():
    scores = np.random.default_rng(0).permutation(1000).astype(np.float64)
    keeper = _stream(scores, 5, [7] * 200)
    assert len(keeper.kept) == 10
    assert sorted(keeper.kept) == _argsort_rule(scores, 5)


def test_the_keeper_needs_at_least_one_example():
    with pytest.raises(ValueError):
        ExampleKeeper(0)


@pytest.fixture(scope="module")
def larger_bench(tmp_path_factory):
    """More Brain test images (24) than the examples shown (2 x 8)."""
    root = tmp_path_factory.mktemp("bench24")
    write_benchmark(root, size=12, seed=1, image_size=64)
    return root


def test_run_test_scores_once_and_its_examples_are_that_pass(larger_bench, tmp_path):
    model = build_tiny()
    samples = list_split(larger_bench, "Brain", "test")
    assert len(samples) > 2 * TOP_K
    calls = []
    forward = model.predict_features

    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    model.predict_features = counted
    written = []

    def writer(run_dir, result, **record):
        written.append((run_dir, result, record))
        return run_dir / "report.html"

    run = RunConfig(
        obj="Brain",
        setting="few",
        shot=2,
        ckpt_path="ck.pth",
        report_dir=str(tmp_path / "rep"),
        metrics_json=str(tmp_path / "m.json"),
    )
    log = RunLog(tmp_path / "log")
    result = run_test(
        model,
        samples,
        True,
        run,
        batch_size=5,
        workers=0,
        cache=None,
        log=log,
        selection="last",
        report=writer,
    )
    log.close()
    assert len(calls) == math.ceil(len(samples) / 5)  # one pass: no second one for the report
    del model.predict_features
    assert [e.index for e in result.examples] == _argsort_rule(result.scores, TOP_K)
    assert len(result.examples) == 2 * TOP_K
    # the same batches again: the maps, pictures and masks the examples hold are the pass's
    kept = KeptMaps(len(samples), 64)
    scores, labels = predict_samples(model, samples, "few", 5, sink=kept)
    assert np.array_equal(scores, result.scores) and np.array_equal(labels, result.labels)
    data = ImageDataset(samples, 64)
    for e in result.examples:
        assert e.sample is samples[e.index] and e.score == scores[e.index]
        assert e.label == labels[e.index]
        assert e.amap.dtype == np.float32 and np.array_equal(e.amap, kept.maps[e.index])
        image, mask = data[e.index][0].permute(1, 2, 0).numpy(), data[e.index][1].numpy()
        assert e.image.dtype == np.uint8 and np.array_equal(e.image, image)
        assert (e.mask is None) == (e.sample.mask is None)
        assert e.mask is None or np.array_equal(e.mask, mask)
    assert result.pixel_histograms is not None
    assert result.pixel_histograms.shape[0] == len(samples)
    [(run_dir, given, record)] = written
    assert run_dir == tmp_path / "rep" and given is result
    assert record == {
        "dataset": "Brain",
        "setting": "few",
        "shot": 2,
        "checkpoint": "ck.pth",
        "pretrain": "none",
        "selection": "last",
    }
    assert json.loads((tmp_path / "m.json").read_text())["n_images"] == len(samples)
    lines = (tmp_path / "log").read_text().splitlines()
    assert lines[0].startswith("Brain AUC : ") and lines[-1] == f"report: {run_dir}/report.html"


def test_run_test_without_a_report_keeps_no_examples(bench, tmp_path):
    model = build_tiny()
    samples = list_split(bench, "Brain", "test")
    run = RunConfig(obj="Brain", setting="zero")
    log = RunLog(None)
    result = run_test(
        model, samples, True, run, batch_size=4, workers=0, cache=None, log=log, selection="last"
    )
    assert result.examples == [] and result.pixel_histograms is None
    assert len(result.scores) == len(samples) and "image_auroc" in result.metrics


def test_a_report_needs_a_writer():
    require_writer(RunConfig(), None)
    with pytest.raises(ValueError, match="report"):
        require_writer(RunConfig(report_dir="x"), None)
