"""The BMAD layout through the real command line: the same synthetic benchmark written in BMAD's
own layout and in MVFA's gives the same numbers, zero-shot and few-shot (with the support lists),
and calibrates the same; a folder holding both asks for ``--layout``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from iqeclip.cli.main import main
from iqeclip.data.synth.writer import write_benchmark
from iqeclip.model.checkpoint import read_checkpoint
from tests.integration.conftest import MODEL

METRICS = (
    *("dataset", "setting", "shot", "n_images", "image_auroc", "pixel_auroc", "image_ap"),
    *("pixel_ap", "image_f1_max", "pixel_aupro"),
)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same benchmark (2 test images per class, 32 px) in each layout."""
    found = {}
    for layout in ("mvfa", "bmad"):
        found[layout] = tmp_path_factory.mktemp(layout)
        write_benchmark(found[layout], size=2, seed=0, image_size=32, overwrite=True, layout=layout)
    return found


def _run(command: str, data: Path, out: Path, *extra: str) -> dict:
    """Run ``command`` on Liver with the tiny model; its metrics JSON."""
    metrics = out / f"{command}.json"
    argv = [command, "--data_path", str(data), "--obj", "Liver", *MODEL, "--no_cache"]
    argv += ["--log_path", str(out / "log"), "--metrics_json", str(metrics), *extra]
    assert main(argv) == 0
    return json.loads(metrics.read_text())


def test_bmad_and_mvfa_layouts_give_the_same_numbers(layouts, tmp_path, capsys):
    found: dict[str, dict[str, dict]] = {}
    for layout, data in layouts.items():
        out = tmp_path / layout
        train = ["--epoch", "1", "--select", "last", "--save_dir", str(out)]
        found[layout] = {
            "zero": _run("train-zero", data, out, *train),
            "few": _run("train-few", data, out, *train, "--shot", "2"),
        }
        # test-few reads the support list again, against this layout's valid split
        found[layout]["test-few"] = _run(
            "test-few", data, out, "--shot", "2", "--ckpt_path", str(out / "Liver_2.pth")
        )
        shutil.copy(out / "Liver_2.pth", out / "calibrated.pth")
        argv = ["calibrate", "--ckpt_path", str(out / "calibrated.pth")]
        assert main([*argv, "--data_path", str(data), "--obj", "Liver", "--layout", layout]) == 0
        thresholds = read_checkpoint(out / "calibrated.pth")[2]["thresholds"]
        found[layout]["calibrate"] = {k: thresholds[k] for k in ("image", "pixel", "n_images")}
    capsys.readouterr()
    for run in ("zero", "few", "test-few"):
        mvfa, bmad = found["mvfa"][run], found["bmad"][run]
        assert {k: mvfa[k] for k in METRICS} == {k: bmad[k] for k in METRICS}, run
        assert bmad["n_images"] == 4 and bmad["pixel_auroc"] is not None
    assert found["mvfa"]["few"]["image_auroc"] == found["bmad"]["test-few"]["image_auroc"]
    assert found["mvfa"]["calibrate"] == found["bmad"]["calibrate"]
    assert found["bmad"]["calibrate"]["pixel"] is not None


def test_a_folder_with_both_layouts_asks_for_layout(layouts, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(layouts["mvfa"], data)
    shutil.copytree(layouts["bmad"] / "Brain", data / "Brain")  # a zero-shot source, twice
    log = ["--log_path", str(tmp_path / "log"), "--no_cache", "--save_dir", str(tmp_path)]
    assert main(["train-zero", "--data_path", str(data), "--obj", "Liver", *MODEL, *log]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "--layout bmad or --layout mvfa" in err and str(data / "Brain_AD") in err
    assert not (tmp_path / "Liver.pth").exists()
    argv = ["train-zero", "--data_path", str(layouts["mvfa"]), "--obj", "Liver", "--layout", "bmad"]
    assert main([*argv, *MODEL, *log]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--layout bmad" in err
    assert str(layouts["mvfa"] / "Liver_AD") in err
