"""``iqeclip reproduce --settings zero+bank-K``: a bank of K drawn normal images on the zero cell's
checkpoint (trained once), tabulated beside zero-shot, equal to building the same bank by hand
and testing it with ``test-zero``, and resumed without redoing anything."""

from __future__ import annotations

import csv
import json
import random
import shutil

import pytest

from iqeclip.cli.main import main
from tests.integration.conftest import MODEL


def _argv(bench, out, *settings):
    return [
        "reproduce",
        "--data_path",
        str(bench),
        "--out",
        str(out),
        "--targets",
        "Brain",
        "--settings",
        *settings,
        "--draws",
        "1",
        *MODEL,
        "--epoch",
        "1",
        "--select",
        "last",
        "--bootstrap",
        "50",
        "--no_cache",
    ]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _counting(monkeypatch, module, name):
    """Wrap ``module.name`` so that each call is counted (the list returned)."""
    calls, real = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_a_bank_cell_reuses_the_zero_checkpoint_and_equals_test_zero(bench, tmp_path, monkeypatch):
    from iqeclip.engine import workflows
    from iqeclip.inference import bank

    trained = _counting(monkeypatch, workflows, "train_zero")
    built = _counting(monkeypatch, bank, "build_bank")
    out = tmp_path / "grid"
    # the bank first: it runs the zero cell, which the zero setting then finds finished
    assert main(_argv(bench, out, "zero+bank-4", "zero")) == 0
    assert len(trained) == 1 and len(built) == 1
    rows = _rows(out / "results.csv")
    assert [(r["setting"], r["shot"], r["bank"]) for r in rows] == [
        ("zero", "0", "0"),
        ("zero+bank", "0", "4"),
    ]
    zero, banked = rows

    # the draw: 4 of the 16 valid normal images, with the draw's seed, recorded by name
    cell = out / "Brain" / "zero+bank-4" / "draw0"
    done = json.loads((cell / "cell.json").read_text())
    pool = sorted((bench / "Brain_AD" / "valid" / "good" / "img").iterdir())
    names = sorted(p.name for p in random.Random(42).sample(pool, 4))
    assert done["seed"] == 42 and done["normal_images"] == names
    assert (cell / "support.txt").read_text() == f"n-0: {' '.join(names)}\n"
    assert done["zero_checkpoint"] == "Brain/zero/draw0/Brain.pth"
    assert banked["seed"] == zero["seed"] == "42" and banked["selection_rule"] == "last"

    # the same bank built and tested by hand: the same metrics
    normal = tmp_path / "normal"
    normal.mkdir()
    for name in names:
        shutil.copy(pool[0].parent / name, normal / name)
    direct = tmp_path / "direct.pth"
    zero_ckpt = out / "Brain" / "zero" / "draw0" / "Brain.pth"
    argv = ["bank", "--ckpt_path", str(zero_ckpt), "--normal", str(normal), "--out", str(direct)]
    assert main([*argv, "--seed", "42"]) == 0
    metrics = tmp_path / "m.json"
    argv = ["test-zero", "--data_path", str(bench), "--ckpt_path", str(direct), "--no_cache"]
    assert main([*argv, "--metrics_json", str(metrics), "--log_path", str(tmp_path / "l")]) == 0
    expected = json.loads(metrics.read_text())
    for key in ("image_auroc", "pixel_auroc", "image_ap", "pixel_ap", "pixel_aupro"):
        assert float(banked[key]) == pytest.approx(expected[key], abs=1e-9), key
    assert banked["n_images"] == str(expected["n_images"])
    # and the bank changed the scores: they are not the zero cell's
    scores = [_rows(c / "report" / "scores.csv") for c in (zero_ckpt.parent, cell)]
    assert [r["path"] for r in scores[0]] == [r["path"] for r in scores[1]]
    assert [r["score"] for r in scores[0]] != [r["score"] for r in scores[1]]

    # the table: both rows, the same columns, the bank's note
    table = (out / "table.md").read_text().splitlines()
    head = next(x for x in table if x.startswith("| setting |"))
    ours = {x.split(" | ")[0][2:]: x for x in table if "| iqeclip (this run) |" in x}
    assert list(ours) == ["zero-shot", "zero+bank-4"]
    for row, line in zip((zero, banked), ours.values(), strict=True):
        assert line.count("|") == head.count("|")
        assert f"| {100 * float(row['image_auroc']):.2f} |" in line
    assert any(x.startswith("- zero+bank-K:") for x in table)

    # resumed: nothing is trained, built or rewritten; a cell killed after its test is not redone
    del built[:]  # the one by hand
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/*/cell.json")}
    assert len(stamps) == 2
    assert main(_argv(bench, out, "zero", "zero+bank-4")) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    (cell / "cell.json").unlink()
    assert main(_argv(bench, out, "zero", "zero+bank-4")) == 0
    assert len(trained) == 1 and not built
    assert json.loads((cell / "cell.json").read_text())["seconds"] is None
    assert _rows(out / "results.csv")[1]["image_auroc"] == banked["image_auroc"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "zero+bank-0",
            "settings 'zero+bank-0': use zero or a shot count such as 4, or zero+bank-K",
        ),
        ("zero+bank-17", "settings zero+bank-17 needs 17 normal images but "),
    ],
)
def test_a_bank_setting_that_cannot_run_stops_before_any_work(
    bench, tmp_path, capsys, setting, message
):
    out = tmp_path / "grid"
    assert main(_argv(bench, out, "zero", setting)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not list(out.glob("*/*/*/cell.json"))
