"""predict's output folder and input walk: one run at a time in an ``--out``, a folder the walk
cannot read is never passed over in silence, --resume and --overwrite clear the temporary files
of cut-off writes, and no two inputs write a file of the same name."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqeclip.cli.main import main
from iqeclip.errors import UserError
from iqeclip.inference import predict as predict_module
from iqeclip.inference.listing import unique_stems
from iqeclip.inference.outputs import OutLock
from tests.integration.conftest import failing_writes, predict_argv
from tests.integration.test_predict_pipeline import _loaded, _rows

HOLD = """
import fcntl, sys
lock = open(sys.argv[1], "a")
fcntl.flock(lock, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def _png(path: Path, size: tuple[int, int] = (40, 40), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random(size) * 255).astype(np.uint8)).save(path)
    return path


def _nifti(path: Path, slices: int, seed: int = 0) -> Path:
    nib = pytest.importorskip("nibabel")
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    nib.Nifti1Image(rng.random((30, 28, slices)).astype(np.float32), np.eye(4)).to_filename(path)
    return path


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_second_run_into_a_locked_out_is_refused_with_one_line(checkpoint, tmp_path, capsys):
    inputs = tmp_path / "in"
    _png(inputs / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(  # another process holds --out's lock, as a running predict does
        [sys.executable, "-c", HOLD, str(out / ".predict.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(predict_argv(checkpoint, inputs, out=out)) == 2
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: --out {out}: another predict run is writing it")
    assert _names(out) == [".predict.lock"]  # refused before the folder was touched
    # the holder is gone: the lock file it leaves blocks nothing
    assert main(predict_argv(checkpoint, inputs, out=out)) == 0
    assert [r["path"] for r in _rows(out / "predictions.csv")] == [str(inputs / "a.png")]


def test_two_runs_into_one_out_the_second_refused_while_the_first_writes(
    checkpoint, tmp_path, monkeypatch, capsys
):
    first, second = tmp_path / "first", tmp_path / "second"
    _png(first / "one.png", seed=1)
    _png(second / "two.png", seed=2)
    out = tmp_path / "out"
    scoring, finish = threading.Event(), threading.Event()
    scored_items = predict_module.scored_items

    def paused(*args, **kwargs):  # the first run waits, holding --out, once it is scoring
        scoring.set()
        assert finish.wait(timeout=120)
        yield from scored_items(*args, **kwargs)

    monkeypatch.setattr(predict_module, "scored_items", paused)
    results: list[object] = []
    run = threading.Thread(
        target=lambda: results.append(
            predict_module.predict(checkpoint, [first], out, detector=_loaded(checkpoint))
        )
    )
    run.start()
    try:
        assert scoring.wait(timeout=120)
        assert main(predict_argv(checkpoint, second, out=out)) == 2
        assert main([*predict_argv(checkpoint, second, out=out), "--overwrite"]) == 2
    finally:
        finish.set()
        run.join(timeout=120)
    err = capsys.readouterr().err
    assert err.count(f"error: --out {out}: another predict run is writing it") == 2
    assert [r.out for r in results] == [out]  # the first run finished
    assert [r["path"] for r in _rows(out / "predictions.csv")] == [str(first / "one.png")]
    assert not (out / "two_overlay.png").exists()


def test_a_failed_run_releases_the_lock(checkpoint, tmp_path, monkeypatch):
    inputs = tmp_path / "in"
    for i in range(3):
        _png(inputs / f"{i}.png", seed=i)
    out = tmp_path / "out"
    with failing_writes("1_"), pytest.raises(UserError, match="No space left"):
        predict_module.predict(checkpoint, [inputs], out, detector=_loaded(checkpoint))
    OutLock(out).release()  # free again at once (another open file of this process would block)
    assert main([*predict_argv(checkpoint, inputs, out=out), "--resume"]) == 0


def _refuse(folder: Path):
    """An ``os.scandir`` that cannot list ``folder``, as for a folder without read permission
    (the tests run as root, who may read any folder)."""
    scandir = os.scandir

    def refusing(path="."):
        if Path(path) == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return scandir(path)

    return refusing


def test_an_unreadable_folder_stops_the_run_or_is_listed_as_skipped(
    checkpoint, tmp_path, monkeypatch, capsys
):
    inputs = tmp_path / "in"
    _png(inputs / "ok" / "a.png")
    _png(inputs / "locked" / "b.png")
    monkeypatch.setattr(os, "scandir", _refuse(inputs / "locked"))
    out = tmp_path / "out"
    assert main(predict_argv(checkpoint, inputs, out=out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: input folder {inputs / 'locked'}: cannot read it (")
    assert not out.exists()  # before any work
    assert main([*predict_argv(checkpoint, inputs, out=out), "--on_bad_input", "skip"]) == 0
    assert "skipped 1 files or inputs, each listed" in capsys.readouterr().out  # the log
    skipped = _rows(out / "skipped_inputs.csv")
    assert [r["path"] for r in skipped] == [str(inputs / "locked")]
    assert "Permission denied" in skipped[0]["reason"]
    assert [r["path"] for r in _rows(out / "predictions.csv")] == [str(inputs / "ok" / "a.png")]


WALK = """
import json, os, sys
from pathlib import Path
from iqeclip.errors import UserError
from iqeclip.inference.listing import expand_inputs
if os.geteuid() == 0:  # root reads any folder: look as nobody (relative paths from here)
    os.setresgid(65534, 65534, 0)
    os.setresuid(65534, 65534, 0)
try:
    expand_inputs([Path("in")])
    error = None
except UserError as exc:
    error = str(exc)
unreadable = []
found = expand_inputs([Path("in")], unreadable=unreadable)
print(json.dumps([error, [str(p) for p in found], [str(s.path) for s in unreadable]]))
"""


def test_folders_without_read_or_execute_permission_are_found_by_the_walk(tmp_path):
    _png(tmp_path / "in" / "ok" / "a.png")
    _png(tmp_path / "in" / "unlisted" / "b.png")
    _png(tmp_path / "in" / "unentered" / "c.png")
    tmp_path.chmod(0o755)
    (tmp_path / "in" / "unlisted").chmod(0o000)
    (tmp_path / "in" / "unentered").chmod(0o644)  # listed, but its files cannot be opened
    try:
        done = subprocess.run(
            [sys.executable, "-c", WALK], cwd=tmp_path, capture_output=True, text=True
        )
    finally:
        for name in ("unlisted", "unentered"):
            (tmp_path / "in" / name).chmod(0o755)
    assert done.returncode == 0, done.stderr
    error, found, unreadable = json.loads(done.stdout)
    assert error.startswith("input folder in/un") and "cannot read it" in error
    assert found == ["in/ok/a.png"]
    assert sorted(unreadable) == ["in/unentered", "in/unlisted"]


def _leftovers(out: Path, names: list[str]) -> list[str]:
    """Temporary files as a write killed midway leaves them (atomic_write's mkstemp call)."""
    made = []
    for name in names:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out)
        os.close(fd)
        made.append(Path(tmp).name)
    return made


def test_resume_and_overwrite_remove_the_temporaries_of_cut_off_writes(
    checkpoint, tmp_path, monkeypatch
):
    inputs = tmp_path / "in"
    _png(inputs / "a.png", seed=1)
    _png(inputs / "b.png", seed=2)
    _nifti(inputs / "c.nii.gz", 2)
    out = tmp_path / "out"
    with failing_writes("b_"), pytest.raises(UserError, match="No space left"):
        predict_module.predict(checkpoint, [inputs], out, detector=_loaded(checkpoint))

    def plant() -> tuple[set[str], set[str]]:
        ours = _leftovers(
            out,
            [
                "b_map.png",
                "b_map.npy",
                "c_s001_overlay.png",
                "predictions.csv",
                "volumes.csv",
                "config.yaml",
                ".predictions.partial.json",
            ],
        )
        (out / ".c_anomaly.nii.gz.tmp.nii.gz").write_bytes(b"\x1f\x8b cut off")
        theirs = _leftovers(out, ["notes.txt", "d_map.png", "b_map.png.bak"])
        for name in ("b_map.png.tmp", ".b_map.png.tmp", ".b_map.png.abc.tmp", "x.tmp"):
            (out / name).write_text("a user's file")
        theirs += ["b_map.png.tmp", ".b_map.png.tmp", ".b_map.png.abc.tmp", "x.tmp"]
        return {*ours, ".c_anomaly.nii.gz.tmp.nii.gz"}, set(theirs)

    ours, theirs = plant()
    assert main([*predict_argv(checkpoint, inputs, out=out), "--resume"]) == 0
    assert not ours & set(_names(out))
    assert theirs <= set(_names(out))
    ours, more = plant()
    theirs |= more
    assert main([*predict_argv(checkpoint, inputs, out=out), "--overwrite"]) == 0
    assert not ours & set(_names(out))
    assert theirs <= set(_names(out))
    hidden = {n for n in _names(out) if n.startswith(".")}
    assert hidden == {".predict.lock"} | {n for n in theirs if n.startswith(".")}


def test_a_volume_and_a_png_named_like_its_slice_write_distinct_files(checkpoint, tmp_path):
    inputs = tmp_path / "in"
    _nifti(inputs / "a.nii.gz", 6)
    _png(inputs / "a_s000.png")
    out = tmp_path / "out"
    assert main([*predict_argv(checkpoint, inputs, out=out), "--outputs", "overlay,map,npy"]) == 0
    rows = _rows(out / "predictions.csv")
    assert len(rows) == 7
    listed = [name for row in rows for name in row["outputs"].split(";")]
    assert len(listed) == len(set(listed))  # no file is listed by two rows
    assert all((out / name).is_file() for name in listed)
    png = [r for r in rows if r["path"] == str(inputs / "a_s000.png")]
    assert png[0]["outputs"].split(";")[0].startswith("a_s000_")
    volume = {
        n for r in rows if r["path"] == str(inputs / "a.nii.gz") for n in r["outputs"].split(";")
    }
    assert {n for n in volume if n.endswith("_map.npy")} == {
        f"a-2_s{i:03d}_map.npy" for i in range(6)
    }
    assert "a-2_anomaly.nii.gz" in volume
    written = {n for n in _names(out) if not n.startswith(".")}
    assert written == set(listed) | {"predictions.csv", "volumes.csv", "config.yaml"}


def test_stems_never_reach_below_another_inputs_stem(tmp_path):
    _nifti(tmp_path / "a.nii.gz", 2)
    for name in ("a_s000.png", "a.png", "a_x.png", "a-2_s000.png", "b.png", "b_s000.png"):
        _png(tmp_path / name)
    pages = [Image.new("L", (8, 8), v) for v in (0, 255)]
    pages[0].save(tmp_path / "t.tif", save_all=True, append_images=pages[1:])
    _png(tmp_path / "t_s001.png")

    def stems(*names: str) -> list[str]:
        return list(unique_stems([tmp_path / n for n in names]).values())

    assert stems("a.nii.gz", "a_s000.png") == ["a-2", "a_s000"]
    assert stems("a_s000.png", "a.nii.gz") == ["a_s000", "a-2"]  # whichever comes first
    assert stems("a.png", "a.nii.gz") == ["a", "a-2"]
    assert stems("a.nii.gz", "a-2_s000.png", "a_x.png") == ["a-3", "a-2_s000", "a_x"]
    assert stems("b.png", "b_s000.png") == ["b", "b_s000"]  # a 2-D image writes b_overlay.png...
    assert stems("t.tif", "t_s001.png") == ["t-2", "t_s001"]  # a multi-page TIFF has slices
