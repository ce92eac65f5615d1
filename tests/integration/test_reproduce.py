"""``iqeclip reproduce``: the grid on the synthetic benchmark, a killed cell resumed, the tables
recomputed from results.csv, and the bootstrap interval against an exhaustive computation."""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from iqeclip.cli.main import main
from iqeclip.reproduce.table import bootstrap_auroc
from tests.integration.conftest import MODEL

GRID = ["--targets", "Brain", "Chest", "--settings", "zero", "2", "--draws", "2"]


def _argv(bench, out):
    return [
        "reproduce",
        "--data_path",
        str(bench),
        "--out",
        str(out),
        *GRID,
        *MODEL,
        "--epoch",
        "1",
        "--select",
        "last",
        "--bootstrap",
        "200",
        "--no_cache",
    ]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_grid_resumes_a_killed_cell_and_tabulates(bench, tmp_path, monkeypatch):
    from iqeclip.engine import trainer

    whole = tmp_path / "whole"
    assert main(_argv(bench, whole)) == 0
    results = _rows(whole / "results.csv")
    assert [(r["target"], r["shot"], r["draw"]) for r in results] == [
        (t, s, d) for t in ("Chest", "Brain") for s in ("0", "2") for d in ("0", "1")
    ]  # the paper's target order
    assert {r["selection_rule"] for r in results} == {"last"}
    for r in results:  # intervals around the cell's own AUROC; pixel ones where masks exist
        assert float(r["image_auroc_ci_low"]) <= float(r["image_auroc_ci_high"])
        assert (r["pixel_auroc_ci_low"] != "") == (r["target"] == "Brain")
    few = whole / "Brain" / "2-shot"
    listed = (few / "draw0" / "support.txt").read_text()
    drawn = (few / "draw1" / "support.txt").read_text()
    assert listed.startswith("a-0: ") and listed != drawn  # the list, then a seeded draw
    assert (bench / "fewshot_seed" / "Brain" / "2-shot.txt").read_text().split()[1] in listed

    # kill the third cell during its training, after its first saved state
    out = tmp_path / "killed"
    fit = trainer.Trainer.save_state
    seen = []

    def killed(self, *args, **kwargs):
        fit(self, *args, **kwargs)
        seen.append(self.run.obj)
        if len(seen) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Trainer, "save_state", killed)
    assert main([*_argv(bench, out), "--save_every", "1"]) == 130
    monkeypatch.setattr(trainer.Trainer, "save_state", fit)
    done = sorted(p.parent.relative_to(out).as_posix() for p in out.glob("*/*/*/cell.json"))
    before = {d: (out / d / "cell.json").stat().st_mtime_ns for d in done}
    assert main([*_argv(bench, out), "--save_every", "1"]) == 0
    assert {d: (out / d / "cell.json").stat().st_mtime_ns for d in done} == before  # untouched
    resumed = [json.loads(p.read_text())["resumed"] for p in out.glob("*/*/*/cell.json")]
    assert resumed.count(True) == 1
    keep = [c for c in results[0] if c not in ("seconds",)]
    assert [{k: r[k] for k in keep} for r in _rows(out / "results.csv")] == [
        {k: r[k] for k in keep} for r in results
    ]
    assert (out / "table.md").read_text() == (whole / "table.md").read_text()

    # the table's numbers, recomputed from results.csv
    table = (whole / "table.md").read_text()
    for target in ("Brain", "Chest"):
        for shot, name in (("0", "zero-shot"), ("2", "2-shot")):
            aucs = [
                100 * float(r["image_auroc"])
                for r in results
                if (r["target"], r["shot"]) == (target, shot)
            ]
            text = f"{np.mean(aucs):.2f} ± {np.std(aucs, ddof=1):.2f}"
            line = next(x for x in table.splitlines() if x.startswith(f"| {name} | iqeclip"))
            assert text in line
    assert "MVFA-AD" in table and "random-init" in table
    assert "<svg" in (whole / "table.html").read_text() and (whole / "table.tex").exists()

    # --table-only rebuilds the same tables from the cells alone
    (whole / "table.md").unlink()
    assert main(["reproduce", "--out", str(whole), "--table-only", "--bootstrap", "200"]) == 0
    assert (whole / "table.md").read_text() == table
    mine = tmp_path / "refs.yaml"
    mine.write_text(
        "- {method: MyNet, source: my lab, setting: few, shot: 2, AC: {Brain: 88.5, Chest: 70}}\n"
    )
    again = ["reproduce", "--out", str(whole), "--table-only", "--references", str(mine)]
    assert main(again) == 0
    line = next(x for x in (whole / "table.md").read_text().splitlines() if "| MyNet |" in x)
    assert line.startswith("| 2-shot | MyNet | 70.00 | 88.50 | – | 79.25 |")
    assert "MVFA-AD" not in (whole / "table.md").read_text()
    mine.write_text("- {method: MyNet}\n")
    assert main(again) == 2  # a malformed file: one line naming it


def test_bootstrap_interval_matches_the_exhaustive_distribution():
    labels = np.array([0, 0, 1, 1, 0])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.2])
    values = []
    for pick in itertools.product(range(5), repeat=5):  # every resample, equally likely
        y = labels[list(pick)]
        if y.min() != y.max():
            values.append(roc_auc_score(y, scores[list(pick)]))
    exact = np.percentile(values, [2.5, 97.5])
    lo, hi = bootstrap_auroc(labels, scores, 20000, seed=0)
    assert lo == pytest.approx(exact[0], abs=0.02) and hi == pytest.approx(exact[1], abs=0.02)
    assert bootstrap_auroc(np.zeros(4), scores[:4], 100, 0) == (None, None)


def test_bootstrap_resamples_score_as_scikit_learn_does():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 40)
    scores = np.round(rng.random(40), 1)  # ties within and across the classes
    n = 300
    draws = np.random.default_rng(7)  # the resamples bootstrap_auroc draws, one at a time
    values = []
    for _ in range(n):
        pick = draws.integers(0, 40, 40)
        if labels[pick].min() != labels[pick].max():
            values.append(roc_auc_score(labels[pick], scores[pick]))
    expected = np.percentile(values, [2.5, 97.5])
    for chunk in (1, 64, 1000):  # the resamples do not depend on how they are batched
        got = bootstrap_auroc(labels, scores, n, seed=7, chunk=chunk)
        assert got == pytest.approx(tuple(expected), abs=1e-12)


def test_pixel_auroc_from_image_histograms():
    from iqeclip.engine.evaluate import PixelHistograms
    from iqeclip.reproduce.table import binned_auroc, bootstrap_pixel_auroc

    rng = np.random.default_rng(0)
    maps = (rng.integers(0, 1000, (6, 8, 8)) + 0.5) / 1000  # values at bin centres: exact
    masks = rng.random((6, 8, 8)) < 0.3
    maps[masks] = np.minimum(maps[masks] + 0.2, 0.9995)
    maps = (np.floor(maps * 1000) + 0.5) / 1000  # equal bins, equal floats (ties alike)
    sink = PixelHistograms(6)
    sink(0, maps[:4], masks[:4])
    sink(4, maps[4:], masks[4:])
    whole = binned_auroc(sink.counts.sum(axis=0))
    assert whole == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    lo, hi = bootstrap_pixel_auroc(sink.counts, 500, seed=0)
    assert lo <= whole <= hi
    # resampling images: an image drawn twice counts all its pixels twice
    pick = [0, 0, 3, 5, 5, 5]
    direct = roc_auc_score(masks[pick].ravel(), maps[pick].ravel())
    assert binned_auroc(sink.counts[pick].sum(axis=0)) == pytest.approx(direct, abs=1e-12)


def test_jobs_locks_and_torchrun(bench, tmp_path):
    """--jobs 2 runs cells in two processes; a cell locked by another process is left to it; under
    torchrun the cells run on both ranks and every file is written once."""
    import fcntl
    import subprocess
    import sys

    small = ["--targets", "Brain", "Chest", "--settings", "zero", "--draws", "1"]
    base = [a for a in _argv(bench, tmp_path / "jobs") if a not in GRID]
    out = tmp_path / "jobs"
    (out / "Chest" / "zero" / "draw0").mkdir(parents=True)
    with open(out / "Chest" / "zero" / "draw0" / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another reproduce is running this cell
        assert main([*base, *small, "--jobs", "2"]) == 0
    assert (out / "Brain" / "zero" / "draw0" / "cell.json").exists()
    assert not (out / "Chest" / "zero" / "draw0" / "cell.json").exists()  # left to the holder
    assert [r["target"] for r in _rows(out / "results.csv")] == ["Brain"]

    ranks = tmp_path / "ranks"
    argv = [a if a != str(out) else str(ranks) for a in base]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, "-m", "iqeclip", *argv, "--targets", "Brain", "--settings", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["target"] for r in _rows(ranks / "results.csv")] == ["Brain"]
    assert proc.stdout.count("cell Brain/2-shot/draw0:") == 1  # one line, from rank 0
