"""The figures of docs/performance.md, "A bank of normal patches": zero-shot against zero-shot
plus a bank of K normal images, per target of the synthetic benchmark, with a random-init
backbone (iqe-tiny), the cost of scoring with a bank as ratios measured side by side, and the
score change against the bank's size.

    python scripts/bank_figures.py WORK [--size 64] [--img_size 128] [--epochs 1]

A random backbone says nothing about pretrained CLIP: these figures show that the bank runs and
what it costs, not what it gains on real scans.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from iqeclip.cli.main import main
from iqeclip.data.layout import CLASS_INDEX
from iqeclip.data.readers import as_input, model_input
from iqeclip.data.synth import write_benchmark
from iqeclip.inference.bank import build_bank
from iqeclip.model.detector import IQEClip

KS = (4, 16, 64)
SIZES = (128, 256, 512, 1024, 2048, 4096)


def _model(img_size: int) -> list[str]:
    return ["--model_name", "iqe-tiny", "--pretrain", "none", "--img_size", str(img_size)]


def _test(bench: Path, ckpt: Path, target: str, work: Path) -> dict:
    out = work / f"m_{ckpt.stem}.json"
    argv = ["test-zero", "--data_path", str(bench), "--obj", target, "--ckpt_path", str(ckpt)]
    assert main([*argv, "--metrics_json", str(out), "--overwrite", "-q"]) == 0
    return json.loads(out.read_text())


def _normals(bench: Path, target: str, k: int, seed: int, work: Path) -> Path:
    pool = sorted((bench / f"{target}_AD" / "valid" / "good" / "img").iterdir())
    folder = work / f"normal_{target}_{k}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path in random.Random(seed).sample(pool, k):
        shutil.copy(path, folder / path.name)
    return folder


def accuracy(bench: Path, work: Path, img_size: int, epochs: int) -> list[dict]:
    rows = []
    for target in CLASS_INDEX:
        save = work / "ck"
        argv = ["train-zero", "--data_path", str(bench), "--obj", target, *_model(img_size)]
        argv += ["--epoch", str(epochs), "--save_dir", str(save), "--overwrite", "-q"]
        assert main([*argv, "--log_path", str(work / f"{target}.log")]) == 0
        zero = save / f"{target}.pth"
        row = {"target": target, "zero": _test(bench, zero, target, work)}
        for k in KS:
            banked = work / f"{target}_bank{k}.pth"
            folder = _normals(bench, target, k, seed=k, work=work)
            build_bank(zero, banked, normal=folder, overwrite=True)
            row[f"bank{k}"] = _test(bench, banked, target, work)
        rows.append(row)
        print(json.dumps(row))
    return rows


def cost(bench: Path, work: Path, img_size: int, repeats: int = 5) -> dict:
    """Seconds per image with and without a bank of 64 images (every patch kept), alternated."""
    zero = work / "ck" / "Brain.pth"
    banked = work / "Brain_bank_all.pth"
    build_bank(
        zero, banked, normal=_normals(bench, "Brain", 64, 64, work), bank_size=10**6, overwrite=True
    )
    plain, with_bank = IQEClip.from_checkpoint(zero), IQEClip.from_checkpoint(banked)
    images = sorted((bench / "Brain_AD" / "test" / "good" / "img").iterdir())[:32]
    batch = as_input(torch.stack([model_input(p, None, img_size) for p in images]), plain.device)
    times: dict[str, list[float]] = {"zero": [], "bank": []}
    for _ in range(repeats):
        for name, model in (("zero", plain), ("bank", with_bank)):
            start = time.perf_counter()
            model.predict(batch, "zero")
            times[name].append((time.perf_counter() - start) / len(images))
    zero_s, bank_s = statistics.median(times["zero"]), statistics.median(times["bank"])
    entries = with_bank.bank.levels[0].shape[0]
    return {
        "s_per_image_zero": zero_s,
        "s_per_image_bank": bank_s,
        "ratio": bank_s / zero_s,
        "entries_per_level": entries,
    }


_PEAK = """
import resource, sys, torch
from pathlib import Path
from iqeclip.data.readers import as_input, model_input
from iqeclip.model.detector import IQEClip
model = IQEClip.from_checkpoint(sys.argv[1])
images = sorted(Path(sys.argv[2]).iterdir())[:32]
batch = as_input(torch.stack([model_input(p, None, int(sys.argv[3])) for p in images]), model.device)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model.predict(batch, "zero")
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_memory(bench: Path, work: Path, img_size: int) -> dict:
    """The peak resident memory (KiB) of a process that loads a checkpoint and scores 32
    images, and how much the scoring itself added, with and without the bank of :func:`cost`."""
    images = bench / "Brain_AD" / "test" / "good" / "img"
    out = {}
    for name, ckpt in (("zero", work / "ck" / "Brain.pth"), ("bank", work / "Brain_bank_all.pth")):
        argv = [sys.executable, "-c", _PEAK, str(ckpt), str(images), str(img_size)]
        before, after = map(
            int, subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
        )
        out[name] = {"peak_kib": after, "scoring_kib": after - before}
    out["peak_ratio"] = out["bank"]["peak_kib"] / out["zero"]["peak_kib"]
    return out


def size_sweep(bench: Path, work: Path, img_size: int) -> list[dict]:
    """Image scores and AUROC of Brain with banks of 64 images cut to each size, against the
    bank that keeps every patch."""
    zero = work / "ck" / "Brain.pth"
    folder = _normals(bench, "Brain", 64, 64, work)
    images = sorted((bench / "Brain_AD" / "test").glob("*/img/*"))
    batch = torch.stack([model_input(p, None, img_size) for p in images])
    scores = {}
    for size in (*SIZES, 10**6):
        path = work / f"Brain_size{size}.pth"
        build_bank(zero, path, normal=folder, bank_size=size, overwrite=True)
        model = IQEClip.from_checkpoint(path)
        scores[size] = model.predict(as_input(batch, model.device), "zero")[1]
    full = scores[10**6]
    spread = float(full.std())
    return [
        {"bank_size": size, "mean_abs_change_over_std": float((s - full).abs().mean()) / spread}
        for size, s in scores.items()
    ]


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--img_size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    bench = args.work / "bench"
    if not bench.is_dir():
        write_benchmark(bench, size=args.size, seed=0, image_size=args.img_size)
    figures = {
        "accuracy": accuracy(bench, args.work, args.img_size, args.epochs),
        "cost": cost(bench, args.work, args.img_size),
        "memory": peak_memory(bench, args.work, args.img_size),
        "sizes": size_sweep(bench, args.work, args.img_size),
    }
    (args.work / "bank_figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures["cost"]))
    print(json.dumps(figures["memory"]))
    for row in figures["sizes"]:
        print(json.dumps(row))


if __name__ == "__main__":
    run()
