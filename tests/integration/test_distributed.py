"""torchrun on the CPU (gloo, 2 processes): sharded evaluation, DDP training, sharded predict."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from iqeclip.cli.main import main
from tests.conftest import build_tiny
from tests.integration.conftest import few_shot_eval_argv, train_few_argv

# Parameters whose exact gradient is zero: a constant shift of the class tokens or queries across
# the embedding dimension is removed by the LayerNorm they go through first, and the IQM key bias
# shifts all attention scores of a query equally. Their float gradients are noise, which Adam
# scales up to lr-sized steps, so they are compared through the model's outputs instead.
OUTPUT_INVARIANT = ("class_tokens.conv.bias", "queries.conv.bias", ".key.bias")


def _torchrun(args, cwd):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "iqeclip",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def trained(bench, tmp_path_factory):
    """The same few-shot run, once in one process (batch 8) and once on 2 ranks (batch 4 each)."""
    root = tmp_path_factory.mktemp("ddp")
    common = [*train_few_argv(bench, 1), "--lr", "1e-3", "--no_cache"]
    assert (
        main(
            [
                *common,
                "--batch_size",
                "8",
                "--save_dir",
                str(root / "one"),
                "--log_path",
                str(root / "one.log"),
            ]
        )
        == 0
    )
    assert not dist.is_initialized()  # a plain run never creates a process group
    _torchrun(
        [
            *common,
            "--batch_size",
            "4",
            "--save_dir",
            str(root / "two"),
            "--log_path",
            str(root / "two.log"),
        ],
        root,
    )
    return root


def test_ddp_training_matches_one_process_with_the_same_global_batch(trained):
    one, two = (
        load_file(trained / "one" / "Brain_2.pth"),
        load_file(trained / "two" / "Brain_2.pth"),
    )
    assert one.keys() == two.keys()
    for key in one:
        if not key.endswith(OUTPUT_INVARIANT):
            torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-4, msg=key)
    models = []
    for name in ("one", "two"):
        model = build_tiny()
        model.head.load_state_dict(load_file(trained / name / "Brain_2.pth"))
        models.append(model)
    x = torch.rand(2, 3, 64, 64)
    maps = [m.predict(x, "few") for m in models]
    torch.testing.assert_close(maps[1][0], maps[0][0], rtol=0, atol=1e-4)
    torch.testing.assert_close(maps[1][1], maps[0][1], rtol=0, atol=1e-4)
    log = (trained / "two.log").read_text()
    assert log.count("epoch: 0") == 1  # only rank 0 logs


def test_sharded_evaluation_equals_one_process(bench, trained, tmp_path):
    ckpt = trained / "one" / "Brain_2.pth"
    log = ["--log_path", str(tmp_path / "log")]
    common = [*few_shot_eval_argv(bench, ckpt), "--batch_size", "1", *log]
    one_run = ["--metrics_json", str(tmp_path / "one.json"), "--report", str(tmp_path / "r1")]
    assert main([*common, *one_run]) == 0
    two_run = ["--metrics_json", str(tmp_path / "two.json"), "--report", str(tmp_path / "r2")]
    _torchrun([*common, *two_run], tmp_path)
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one == two
    # rank 0 writes the run folder from the one scoring pass every rank received
    for name in ("metrics.json", "scores.csv", "pixel_histograms.npy", "report.md"):
        assert (tmp_path / "r1" / name).read_bytes() == (tmp_path / "r2" / name).read_bytes()
    examples = sorted(p.name for p in (tmp_path / "r1" / "examples").iterdir())
    assert examples and examples == sorted(p.name for p in (tmp_path / "r2" / "examples").iterdir())
    for name in examples:
        a, b = (np.load(tmp_path / r / "examples" / name) for r in ("r1", "r2"))
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_sharded_prediction_writes_each_output_once(bench, trained, tmp_path):
    inputs = bench / "Liver_AD" / "test"
    out = tmp_path / "out"
    _torchrun(
        [
            "predict",
            "--ckpt_path",
            str(trained / "one" / "Brain_2.pth"),
            str(inputs),
            "--out",
            str(out),
        ],
        tmp_path,
    )
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # the images (the BMAD layout's anomaly_mask/ folders are left out); names repeat across folders
    n_inputs = len([p for p in inputs.rglob("*.png") if "anomaly_mask" not in p.parts])
    assert len(rows) == n_inputs == len({r["path"] for r in rows})
    assert len(list(out.glob("*_overlay.png"))) == n_inputs
