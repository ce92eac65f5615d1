"""``iqeclip reproduce``: the grid on the synthetic benchmark, a killed cell resumed, the tables
recomputed from results.csv, and the bootstrap interval against an exhaustive computation."""

from __future__ import annotations

import csv
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from iqeclip.cli.main import main
from iqeclip.reproduce.cells import bootstrap_auroc
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
    from iqeclip.reproduce.cells import binned_auroc, bootstrap_pixel_auroc

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


# grids built by hand: the tables of an unfinished grid, and of one with unreadable files

SCORES = "path,slice,label,score\na.png,,0,0.1\nb.png,,0,0.4\nc.png,,1,0.35\nd.png,,1,0.8\n"


def _finished_cell(out, target, setting, draw, auroc, pixel=None):
    """A cell folder as run_cell leaves it (cell.json, metrics.json, report/scores.csv and, with
    ``pixel``, report/pixel_histograms.npy)."""
    folder = out / target / setting / f"draw{draw}"
    (folder / "report").mkdir(parents=True)
    shot = 0 if setting == "zero" else int(setting.removesuffix("-shot"))
    metrics = {"dataset": target, "n_images": 4, "image_auroc": auroc, "pixel_auroc": pixel}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (folder / "report" / "scores.csv").write_text(SCORES)
    if pixel is not None:
        counts = np.random.default_rng(draw).integers(0, 9, (4, 2, 10))
        np.save(folder / "report" / "pixel_histograms.npy", counts)
    cell = {"target": target, "shot": shot, "draw": draw, "setting": "few" if shot else "zero"}
    cell |= {"seed": 42 + draw, "select": "last", "seconds": 3.0, "n_images": 4, "resumed": False}
    (folder / "cell.json").write_text(json.dumps(cell, indent=2))
    return folder


def _record(out, targets, settings, draws):
    """The grid's reproduce.yaml, as run_reproduce saves it."""
    grid = {"targets": targets, "settings": settings, "draws": draws}
    (out / "reproduce.yaml").write_text(json.dumps({"command": "reproduce", "reproduce": grid}))


def _table_only(out):
    return main(["reproduce", "--out", str(out), "--table-only", "--bootstrap", "20"])


def _ours(table, setting):
    return next(x for x in table.splitlines() if x.startswith(f"| {setting} | iqeclip"))


def test_table_only_marks_an_unfinished_grid(tmp_path, capsys):
    """3 of 8 cells finished, all of Brain: every format says the grid is incomplete, Chest is
    'not run', an entry with one of two draws says so, and the draws note gives true counts."""
    out = tmp_path / "grid"
    out.mkdir()
    _record(out, ["Brain", "Chest"], ["zero", "2"], 2)
    _finished_cell(out, "Brain", "zero", 0, 0.8, pixel=0.6)
    _finished_cell(out, "Brain", "zero", 1, 0.6, pixel=0.7)
    _finished_cell(out, "Brain", "2-shot", 0, 0.9, pixel=0.75)
    (out / "Chest" / "zero" / "draw0").mkdir(parents=True)  # started, killed: no cell.json
    capsys.readouterr()
    assert _table_only(out) == 0
    status = "Incomplete grid: 3 of 8 cells finished (5 not run, 0 unreadable)."
    assert status in capsys.readouterr().err  # the console says so
    table = (out / "table.md").read_text()
    assert f"**{status}**" in table.splitlines()[2]  # above the table
    ac, pixel = [80.0, 60.0], [60.0, 70.0]
    zero = " | ".join(f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f}" for v in (ac, pixel))
    # columns: Chest AC, Brain AC, Brain AS, average AC (needs Chest), average AS (Brain only)
    assert _ours(table, "zero-shot") == (
        f"| zero-shot | iqeclip (this run) | not run | {zero} | – | {np.mean(pixel):.2f} |"
    )
    assert _ours(table, "2-shot") == (
        "| 2-shot | iqeclip (this run) | not run | 90.00 (1 of 2 draws) | 75.00 (1 of 2 draws) "
        "| – | 75.00 (partial) |"
    )
    assert "over the finished draws of each cell (3 of the 8 the grid asks, 2 per cell)" in table
    assert "draw(s) per cell" not in table
    tex = (out / "table.tex").read_text()
    assert rf"\multicolumn{{7}}{{l}}{{{status}}} \\" in tex
    assert "not run & 90.00 (1 of 2 draws) &" in tex
    page = (out / "table.html").read_text()
    assert f"<strong>{status}</strong>" in page and "<td>not run</td>" in page
    assert "<td>90.00 (1 of 2 draws)</td>" in page
    assert len(_rows(out / "results.csv")) == 3

    (out / "reproduce.yaml").unlink()  # no record: the grid is every combination of the folders
    assert _table_only(out) == 0
    assert "Incomplete grid: 3 of 8 cells finished" in (out / "table.md").read_text()

    for target, setting, draw in [
        ("Brain", "2-shot", 1),
        *itertools.product(["Chest"], ["zero", "2-shot"], [0, 1]),
    ]:
        _finished_cell(out, target, setting, draw, 0.7, pixel=0.5 if target == "Brain" else None)
    capsys.readouterr()
    assert _table_only(out) == 0  # finished: nothing marked
    assert "Incomplete" not in capsys.readouterr().err
    table = (out / "table.md").read_text()
    assert "Incomplete" not in table and "draws)" not in table and "partial" not in table
    assert "over 2 draw(s) per cell" in table
    assert "Incomplete" not in (out / "table.tex").read_text()


class _Trap:
    """Unpickling it creates the folder ``path``: proof that a file was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BAD_FILES = {
    "truncated cell.json": ("cell.json", "not readable JSON", lambda f: _truncate(f / "cell.json")),
    "truncated metrics.json": (
        "metrics.json",
        "not readable JSON",
        lambda f: _truncate(f / "metrics.json"),
    ),
    "metrics.json with a string": (
        "metrics.json",
        "image_auroc is 'high', expected a number or null",
        lambda f: (f / "metrics.json").write_text('{"image_auroc": "high"}'),
    ),
    "scores.csv with a wrong header": (
        "report/scores.csv",
        "the header lacks score",
        lambda f: (f / "report" / "scores.csv").write_text("path,slice,label,value\na,,0,1\n"),
    ),
    "scores.csv with a non-number": (
        "report/scores.csv",
        "line 3: score 'high' is not a number",
        lambda f: (f / "report" / "scores.csv").write_text(SCORES.replace("0.4", "high")),
    ),
    "truncated pixel_histograms.npy": (
        "report/pixel_histograms.npy",
        "not a readable .npy array",
        lambda f: _truncate(f / "report" / "pixel_histograms.npy"),
    ),
    "pickled pixel_histograms.npy": (
        "report/pixel_histograms.npy",
        "allow_pickle",
        lambda f: np.save(
            f / "report" / "pixel_histograms.npy",
            np.array([_Trap(f / "unpickled")], dtype=object),
            allow_pickle=True,
        ),
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_table_only_marks_a_cell_with_an_unreadable_file(tmp_path, capsys, case):
    """One warning line names the cell and the file; the other draw is tabulated, the broken
    one is marked unreadable and not counted as finished; a pickle is refused, not loaded."""
    name, reason, damage = BAD_FILES[case]
    out = tmp_path / "grid"
    out.mkdir()
    _record(out, ["Brain"], ["zero"], 2)
    _finished_cell(out, "Brain", "zero", 0, 0.8, pixel=0.6)
    broken = _finished_cell(out, "Brain", "zero", 1, 0.6, pixel=0.7)
    damage(broken)
    capsys.readouterr()
    assert _table_only(out) == 0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "Brain/zero/draw1" in x]
    assert len(lines) == 2, err  # the cell's warning, then the grid's status
    assert lines[0].startswith("cell Brain/zero/draw1: ") and "tabulated as unreadable" in lines[0]
    assert f"{broken / name}" in lines[0] and reason in lines[0]
    status = "Incomplete grid: 1 of 2 cells finished (0 not run, 1 unreadable: Brain/zero/draw1)."
    assert lines[1].startswith(status)
    table = (out / "table.md").read_text()
    assert _ours(table, "zero-shot") == (
        "| zero-shot | iqeclip (this run) | 80.00 (1 of 2 draws, 1 unreadable) "
        "| 60.00 (1 of 2 draws, 1 unreadable) | 80.00 (partial) | 60.00 (partial) |"
    )
    assert status in (out / "table.tex").read_text() and status in (out / "table.html").read_text()
    assert [r["draw"] for r in _rows(out / "results.csv")] == ["0"]
    assert not (broken / "unpickled").exists()

    damage(out / "Brain" / "zero" / "draw0")  # nothing readable left: one line, exit 2
    capsys.readouterr()
    assert _table_only(out) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: --out {out}: no finished cell to tabulate (2 unreadable: see the warnings above)"
    )


def test_a_cell_with_an_unreadable_metrics_file_is_run_again(tmp_path, monkeypatch, caplog):
    """A cell killed after its test, whose metrics.json is truncated, is trained and tested again
    instead of taking the unreadable file as its result."""
    import logging

    from iqeclip.config import ModelConfig, RunConfig
    from iqeclip.engine import workflows
    from iqeclip.reproduce.grid import Cell, run_cell

    trained = []

    def train(model_cfg, run, report=None):
        trained.append(run.seed)
        Path(run.metrics_json).write_text(json.dumps({"image_auroc": 0.75, "n_images": 4}))

    monkeypatch.setattr(workflows, "train_zero", train)
    monkeypatch.setattr(logging.getLogger("iqeclip"), "propagate", True)
    cell = Cell("Brain", 0, 0)
    folder = tmp_path / cell.folder
    folder.mkdir(parents=True)
    (folder / "Brain.pth").write_bytes(b"checkpoint")  # the test's checkpoint was written
    (folder / "metrics.json").write_text('{"image_auroc": 0.7')
    assert run_cell(ModelConfig(), RunConfig(seed=5), cell, tmp_path, {}) == "ran"
    assert trained == [5]
    assert f"cell Brain/zero/draw0: {folder / 'metrics.json'}: not readable JSON" in caplog.text
    assert json.loads((folder / "cell.json").read_text())["n_images"] == 4

    (folder / "cell.json").unlink()  # a readable metrics.json: the results stand, nothing runs
    assert run_cell(ModelConfig(), RunConfig(seed=5), cell, tmp_path, {}) == "ran"
    assert trained == [5]
