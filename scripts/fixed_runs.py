"""A fixed set of runs whose outputs must not change under a refactor, and their comparison.

    python scripts/fixed_runs.py run WORK DEST    # run them (in WORK, a fixed path), keep in DEST
    python scripts/fixed_runs.py compare A B      # list every file that differs, after masking

Run it once on the old tree (``PYTHONPATH=old/src``) and once on the new, with the same WORK
folder (outputs name their paths), then compare the two DEST folders. What is masked: times
and durations (log lines with seconds, ``"seconds"`` fields, ISO timestamps). Everything else
must be byte-identical; ``compare`` prints each differing file, and for text files the first
differing lines. The runs: the demo, ``test-few --report``, ``predict`` on a PNG folder, a
16-bit PNG, a NIfTI volume stored LPS and a two-series DICOM folder, ``calibrate``,
``reproduce`` on a 2-cell grid, and ``serve``'s JSON answer for a PNG and for a volume.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

MODEL = ["--model_name", "iqe-tiny", "--pretrain", "none", "--img_size", "64"]
MASKS = [
    (re.compile(rb"\d+(\.\d+)?\s?(s|ms|seconds|min)\b"), b"<time>"),
    (re.compile(rb'"(seconds|duration|elapsed|started|finished|time)[a-z_]*": [0-9.e+-]+'), b"<t>"),
    (re.compile(rb"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:?\d\d|Z)?"), b"<date>"),
    (re.compile(rb"\d+(\.\d+)? (img|images|inputs|batches|it)/s"), b"<rate>"),
    (re.compile(rb",\d+(\.\d+)?\n"), b",<seconds>\n"),  # results.csv's last column: seconds
]


def iqeclip(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "iqeclip", *argv], check=True)


def _volumes(work: Path) -> dict[str, Path]:
    """A 16-bit PNG, a NIfTI stored LPS and a folder of two DICOM series."""
    import nibabel as nib
    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.data import get_testdata_file

    inputs = work / "inputs"
    inputs.mkdir()
    ramp = np.linspace(0, 60000, 48 * 40, dtype=np.uint16).reshape(48, 40)
    ramp[10:20, 10:20] = 65535
    Image.fromarray(ramp).save(inputs / "ramp16.png")
    data = np.random.default_rng(3).random((40, 36, 5)).astype(np.float32)
    data[5:15, 5:15, 1:3] += 3
    nib.Nifti1Image(data, np.diag([-0.8, -0.8, 2.0, 1.0])).to_filename(inputs / "lps.nii.gz")
    folder = inputs / "two_series"
    folder.mkdir()
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for series in (1, 2):
        ct.SeriesInstanceUID = f"1.2.826.0.1.3680043.8.498.{series}"
        ct.SeriesNumber = series
        for i in range(1, 4):
            ct.InstanceNumber = i
            ct.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
            ct.SOPInstanceUID = f"{ct.SeriesInstanceUID}.{i}"
            ct.save_as(folder / f"S{series}_IM{i}.dcm")
    return {"png16": inputs / "ramp16.png", "lps": inputs / "lps.nii.gz", "two": folder}


def _serve(work: Path, ckpt: Path, files: list[Path]) -> None:
    from fastapi.testclient import TestClient

    from iqeclip.model.detector import IQEClip
    from iqeclip.serve.app import create_app

    root = work / "serve_root"
    root.mkdir()
    client = TestClient(
        create_app(IQEClip.from_checkpoint(ckpt), str(ckpt), root, 20.0, 4, "torch")
    )
    answers = {}
    for path in files:
        response = client.post("/api/predict", files={"file": (path.name, path.read_bytes())})
        answer = response.json()
        rid = answer.get("id", "")  # random: named by the file instead
        (root / rid).rename(root / path.name)
        text = json.dumps(answer, indent=1, sort_keys=True).replace(rid, path.name)
        answers[path.name] = {"status": response.status_code, "json": json.loads(text)}
    (work / "serve_answers.json").write_text(json.dumps(answers, indent=1, sort_keys=True))


def run(work: Path, dest: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bench = work / "bench"
    iqeclip("synth", "--out", str(bench), "--size", "2", "--image_size", "64", "-q")
    iqeclip("demo", "--out", str(work / "demo"), "--data_path", str(bench), "--img_size", "64",
            "--zero_epochs", "1", "--few_epochs", "1", "--shot", "2", "-q")  # fmt: skip
    ck = work / "ck"
    iqeclip("train-few", "--data_path", str(bench), *MODEL, "--shot", "2", "--epoch", "1",
            "--save_dir", str(ck), "--log_path", str(ck / "log"), "-q")  # fmt: skip
    ckpt = ck / "Brain_2.pth"
    iqeclip("test-few", "--data_path", str(bench), "--shot", "2", "--ckpt_path", str(ckpt),
            "--report", str(work / "report"), "-q")  # fmt: skip
    iqeclip("predict", "--ckpt_path", str(ckpt), str(bench / "Brain_AD" / "test"),
            "--out", str(work / "pred_png"), "-q")  # fmt: skip
    inputs = _volumes(work)
    for name, path in inputs.items():
        iqeclip(
            "predict",
            "--ckpt_path",
            str(ckpt),
            str(path),
            "--out",
            str(work / f"pred_{name}"),
            "-q",
        )
    calibrated = work / "calibrated.pth"
    shutil.copy(ckpt, calibrated)
    iqeclip(
        "calibrate",
        "--ckpt_path",
        str(calibrated),
        "--data_path",
        str(bench),
        "--obj",
        "Brain",
        "-q",
    )
    iqeclip("predict", "--ckpt_path", str(calibrated), str(inputs["lps"]), str(inputs["two"]),
            "--out", str(work / "pred_calibrated"), "-q")  # fmt: skip
    iqeclip("reproduce", "--data_path", str(bench), "--out", str(work / "grid"), "--targets", "Brain",
            "--settings", "zero", "2", "--draws", "1", *MODEL, "--epoch", "1", "--select", "last",
            "--bootstrap", "200", "--no_cache", "-q")  # fmt: skip
    _serve(work, calibrated, [next((bench / "Brain_AD" / "test").rglob("*.png")), inputs["lps"]])
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(work, dest)


def _masked(data: bytes) -> bytes:
    for pattern, replacement in MASKS:
        data = pattern.sub(replacement, data)
    return data


def _same_checkpoint(x: Path, y: Path) -> bool:
    """Equal tensors and equal metadata (safetensors may store its keys in another order)."""
    from safetensors import safe_open

    def read(path: Path) -> tuple[dict, dict]:
        with safe_open(str(path), "np") as f:
            meta = {k: json.loads(v) if v[:1] in "{[" else v for k, v in f.metadata().items()}
            return meta, {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118

    (m1, t1), (m2, t2) = read(x), read(y)
    return m1 == m2 and t1.keys() == t2.keys() and all((t1[k] == t2[k]).all() for k in t1)


def compare(a: Path, b: Path) -> int:
    names = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    names |= {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    differ = 0
    for name in sorted(names):
        left, right = a / name, b / name
        if not (left.exists() and right.exists()):
            print(f"only in {'A' if left.exists() else 'B'}: {name}")
            differ += 1
            continue
        x, y = left.read_bytes(), right.read_bytes()
        if x == y or _masked(x) == _masked(y):
            continue
        if name.suffix == ".pth" and _same_checkpoint(left, right):
            continue
        differ += 1
        print(f"differs: {name}")
        try:
            lines = zip(_masked(x).decode().splitlines(), _masked(y).decode().splitlines())
            shown = [f"  A: {p}\n  B: {q}" for p, q in lines if p != q][:3]
            print("\n".join(shown))
        except UnicodeDecodeError:
            pass
    print(f"{len(names)} files, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
