"""The four workflows through the real command line, on the synthetic benchmark with iqe-tiny."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from iqeclip.cli.main import main
from tests.integration.conftest import MODEL, output_argv

ROOT = Path(__file__).resolve().parents[2]
COMMON = "--features_list [6,12,18,24] --prompt_len 2 --deep_prompt_len 1 --use_global --total_d_layer_len 11"
PAPER = {  # the IQE-CLIP README's commands, verbatim
    "train_zero": f"--obj Brain --batch_size 16 --epoch 50 {COMMON.replace(' --prompt_len', ' --log_path Brain_zero.log --save_dir ./ckpt --prompt_len')}",
    "train_few": f"--obj Brain --shot 4 --batch_size 16 --epoch 50 {COMMON.replace(' --prompt_len', ' --log_path Brain_few.log --save_dir ./ckpt --prompt_len')}",
    "test_zero": f"--obj Brain --batch_size 16 {COMMON.replace(' --prompt_len', ' --log_path Test_Brain_zero.log --ckpt_path ./ckpt/Brain.pth --prompt_len')}",
    "test_few": f"--obj Brain --shot 4 --batch_size 16 {COMMON.replace(' --prompt_len', ' --log_path Test_Brain_few.log --ckpt_path ./ckpt/Brain_4.pth --prompt_len')}",
}
AUC = re.compile(r"^Brain AUC : \d\.\d{4}$", re.M)
PAUC = re.compile(r"^Brain pAUC : \d\.\d{4}$", re.M)


def test_paper_readme_commands_run_verbatim(bench, tmp_path):
    assert "--features_list [6,12,18,24]" in PAPER["train_zero"]
    for script, args in PAPER.items():
        cmd = [
            sys.executable,
            str(ROOT / f"{script}.py"),
            *shlex.split(args),
            "--data_path",
            str(bench),
            *MODEL,
        ]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{script}: {proc.stderr[-2000:]}"
    assert (tmp_path / "ckpt" / "Brain.pth").is_file() and (
        tmp_path / "ckpt" / "Brain_4.pth"
    ).is_file()
    assert (tmp_path / "ckpt" / "Brain.yaml").is_file()
    zero_log = (tmp_path / "Brain_zero.log").read_text()
    assert re.search(r"^best epoch found: epoch \d+ batch \d+$", zero_log, re.M)
    assert "use_global: True" in zero_log and "epoch: 49" in zero_log
    assert re.search(r"^Loss: \d+\.\d+", zero_log, re.M)
    for log in ("Brain_zero.log", "Brain_few.log", "Test_Brain_zero.log", "Test_Brain_few.log"):
        text = (tmp_path / log).read_text()
        assert AUC.search(text) and PAUC.search(text), log


def _run(argv: list[str]) -> int:
    return main(argv)


def test_dash_spellings_metrics_json_and_train_test_agree(bench, tmp_path, capsys):
    common = [
        "--data-path",
        str(bench),
        "--obj",
        "Liver",
        "--batch-size",
        "8",
        *[a.replace("_", "-") for a in MODEL],
    ]
    train_json, test_json = tmp_path / "train.json", tmp_path / "test.json"
    with pytest.warns(UserWarning, match="optimistic"):
        rc = _run(
            [
                "train-few",
                *common,
                "--shot",
                "2",
                "--epoch",
                "2",
                "--select",
                "target-test",
                "--save-dir",
                str(tmp_path / "ck"),
                "--log-path",
                str(tmp_path / "few.log"),
                "--metrics-json",
                str(train_json),
            ]
        )
    assert rc == 0
    assert "warning: --select target-test" in (tmp_path / "few.log").read_text()
    rc = _run(
        [
            "test-few",
            *common,
            "--shot",
            "2",
            "--ckpt-path",
            str(tmp_path / "ck" / "Liver_2.pth"),
            "--log-path",
            str(tmp_path / "test.log"),
            "--metrics-json",
            str(test_json),
        ]
    )
    assert rc == 0
    trained, tested = json.loads(train_json.read_text()), json.loads(test_json.read_text())
    keys = {
        "dataset",
        "setting",
        "shot",
        "n_images",
        "image_auroc",
        "pixel_auroc",
        "image_ap",
        "pixel_ap",
        "image_f1_max",
        "pixel_aupro",
    }
    assert keys <= set(tested)
    assert tested["dataset"] == "Liver" and tested["setting"] == "few" and tested["shot"] == 2
    assert tested["n_images"] == 4 and tested["pixel_auroc"] is not None
    assert {k: trained[k] for k in keys} == {k: tested[k] for k in keys}
    out = capsys.readouterr().out
    assert re.search(r"^Liver AUC : \d\.\d{4}$", out, re.M)


def test_image_only_target_and_select_last(bench, tmp_path):
    args = [
        "--data_path",
        str(bench),
        "--obj",
        "Chest",
        *MODEL,
        "--log_path",
        str(tmp_path / "log"),
    ]
    assert (
        _run(["train-zero", *args, "--epoch", "1", "--select", "last", "--save_dir", str(tmp_path)])
        == 0
    )
    metrics = tmp_path / "m.json"
    assert (
        _run(
            [
                "test-zero",
                *args,
                "--ckpt_path",
                str(tmp_path / "Chest.pth"),
                "--metrics_json",
                str(metrics),
            ]
        )
        == 0
    )
    record = json.loads(metrics.read_text())
    assert record["setting"] == "zero" and record["shot"] == 0
    assert record["pixel_auroc"] is None and record["pixel_aupro"] is None
    assert "pAUC" not in (tmp_path / "log").read_text()


def test_iterate_minus_one_draws_the_support_set(bench, tmp_path):
    args = [
        "--data_path",
        str(bench),
        "--obj",
        "Retina_RESC",
        *MODEL,
        "--shot",
        "2",
        "--iterate",
        "-1",
        "--epoch",
        "1",
        *output_argv(tmp_path),
    ]
    assert _run(["train-few", *args]) == 0
    assert (
        "support: 2 abnormal + 2 normal -> 44 augmented samples" in (tmp_path / "log").read_text()
    )


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return err


def test_clear_one_line_errors(bench, tmp_path, capsys):
    log = ["--log_path", str(tmp_path / "log")]
    err = _error(["train-zero", "--data_path", str(tmp_path / "nowhere"), *MODEL, *log], capsys)
    assert "nowhere" in err
    err = _error(
        [
            "test-zero",
            "--data_path",
            str(bench),
            "--obj",
            "Kidney",
            *MODEL,
            "--ckpt_path",
            str(tmp_path / "x.pth"),
            *log,
        ],
        capsys,
    )
    assert "x.pth" in err
    ck = tmp_path / "ck"
    few = ["train-few", "--data_path", str(bench), *MODEL, "--shot", "2", "--epoch", "1"]
    assert main([*few, "--save_dir", str(ck), *log]) == 0
    capsys.readouterr()
    err = _error([*few, "--save_dir", str(ck), *log], capsys)
    assert "Brain_2.pth exists; pass --overwrite" in err
    err = _error(
        [
            "test-few",
            "--data_path",
            str(bench),
            *MODEL,
            "--features_list",
            "6",
            "12",
            "--ckpt_path",
            str(ck / "Brain_2.pth"),
            *log,
        ],
        capsys,
    )
    assert "built for another model: features_list=[6, 12] vs [6, 12, 18, 24]" in err
    err = _error(
        [
            "train-few",
            "--data_path",
            str(bench),
            *MODEL,
            "--shot",
            "3",
            "--save_dir",
            str(tmp_path / "c3"),
            *log,
        ],
        capsys,
    )
    assert "3-shot" in err


def test_demo_writes_table_report_and_figure(bench, tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--data_path",
                str(bench),
                "--out",
                str(out),
                "--img_size",
                "64",
                "--zero_epochs",
                "1",
                "--few_epochs",
                "1",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    printed = captured.out
    assert re.search(r"^zero +0 +\d\.\d{4}", printed, re.M) and re.search(
        r"^few +4 +\d\.\d{4}", printed, re.M
    )
    # the bank row: the zero-shot checkpoint with the 16 normal valid images, tested the same way
    bank_row = re.search(r"^zero\+bank +0 +(\d\.\d{4})", printed, re.M)
    assert bank_row and "a memory of 16 normal Brain images" in printed
    bank_metrics = json.loads((out / "zero_bank.json").read_text())
    assert bank_row[1] == f"{bank_metrics['image_auroc']:.4f}"
    assert bank_metrics["n_images"] == json.loads((out / "zero.json").read_text())["n_images"]
    from iqeclip.model.checkpoint import read_checkpoint

    stored = read_checkpoint(out / "ckpt" / "Brain_bank.pth")[2]["bank"]
    assert len(stored["images"]) == 16 and stored["weight"] == 0.5
    assert "not the accuracy of pretrained CLIP" in printed
    assert "below 0.5" in printed and "iqeclip demo --model_name ViT-L-14-336" in printed
    # a short summary: no resolved options (-v shows them), no progress bars off a terminal
    assert len(printed.splitlines()) <= 40, printed
    assert "learning_rate: " not in printed and "it/s" not in captured.err + printed
    reports = [out / s / "report.html" for s in ("zero", "zero+bank", "few-4")]
    assert all(path.is_file() for path in reports)
    assert all(str(path) in printed for path in reports)
    assert "learning_rate: " in (out / "demo.log").read_text()  # the log file keeps them
    for path in reports:
        path.unlink()
    assert main(["report", str(out)]) == 0  # the demo's folder is a normal run folder
    assert all(path.is_file() for path in reports)
    assert "Image AUROC" in reports[0].read_text(encoding="utf-8")
    report = (out / "report.md").read_text()
    assert "maps.png" in report and "Image AUROC" in report
    from PIL import Image

    assert Image.open(out / "maps.png").size[0] > 3 * 64
    from iqeclip.report.heatmaps import _ANCHORS

    picture = np.asarray(Image.open(out / "maps.png").convert("RGB"))
    top, bottom = _ANCHORS[-1].astype(np.uint8), _ANCHORS[0].astype(np.uint8)
    bar = [  # the colour bar: a column running from the ramp's last colour to its first
        x
        for x in range(picture.shape[1])
        if (picture[:, x] == top).all(axis=1).any() and (picture[:, x] == bottom).all(axis=1).any()
    ]
    assert bar and min(bar) > 4 * 64  # right of the input and the three map columns
