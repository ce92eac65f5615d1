"""The bounded pool of writer threads: order of callbacks, back-pressure, errors, no lost jobs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from iqeclip.errors import UserError
from iqeclip.report.heatmaps import _ANCHORS, _STEPS, _ramp, colorize
from iqeclip.runtime.files import WriterPool, atomic_write


def test_a_callback_runs_only_after_every_earlier_job():
    finished: list[int] = []
    seen: list[list[int]] = []
    release = threading.Event()

    def job(i: int) -> None:
        if i == 0:
            release.wait(5)  # the first job is slow: the callback after job 1 must wait for it
        finished.append(i)

    with WriterPool(threads=2) as pool:
        pool.submit(lambda: job(0))
        pool.submit(lambda: job(1))
        pool.then(lambda: seen.append(sorted(finished)))
        time.sleep(0.05)
        pool.then(lambda: seen.append(sorted(finished)))  # checked here: job 0 still running
        assert seen == []
        release.set()
        pool.wait()
    assert seen == [[0, 1], [0, 1]]


def test_submit_blocks_when_the_queue_is_full():
    release = threading.Event()
    running = threading.Semaphore(0)
    pool = WriterPool(threads=1)  # two jobs may wait at once

    def slow() -> None:
        running.release()
        release.wait(5)

    pool.submit(slow)
    pool.submit(slow)
    blocked = threading.Thread(target=pool.submit, args=(slow,))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # the third submit waits for a free slot
    release.set()
    blocked.join(5)
    assert not blocked.is_alive()
    pool.wait()
    pool.__exit__(None, None, None)


def test_a_jobs_error_reaches_the_caller_and_skips_later_callbacks(tmp_path):
    called: list[str] = []
    target = tmp_path / "missing" / "x.png"
    (tmp_path / "missing").write_text("a file where a folder should be")
    # raised by the first call after the job failed: submit, then or wait, as the timing goes
    with WriterPool() as pool, pytest.raises(UserError, match=f"cannot write {target}"):
        pool.submit(lambda: atomic_write(target, lambda tmp: tmp.write_bytes(b"x")))
        pool.then(lambda: called.append("done"))
        pool.wait()
    assert called == []


def test_leaving_the_pool_finishes_the_jobs_already_submitted(tmp_path):
    recorded: list[int] = []
    with pytest.raises(RuntimeError), WriterPool() as pool:
        for i in range(6):
            pool.submit(lambda i=i: (time.sleep(0.02), (tmp_path / f"{i}").write_text("x")))
            pool.then(lambda i=i: recorded.append(i))
        raise RuntimeError("the caller fails")
    assert sorted(p.name for p in tmp_path.iterdir()) == [str(i) for i in range(6)]
    assert recorded == list(range(6))  # what was written is still recorded


def test_the_colour_table_matches_the_ramp():
    values = np.random.default_rng(0).random((64, 64))
    exact = _ramp(values)
    # a table entry is at most half a step from the value: the steepest segment's slope times it
    slope = np.abs(np.diff(_ANCHORS, axis=0)).max() * (len(_ANCHORS) - 1)
    assert np.abs(colorize(values).astype(float) - exact).max() <= 0.5 + slope / (2 * _STEPS) + 1e-3
    anchors = np.linspace(0, 1, len(_ANCHORS))
    assert (colorize(anchors[None]) == _ANCHORS.astype(np.uint8)).all()
    assert (colorize(np.array([[-1.0, np.nan, 2.0]])) == _ANCHORS[[0, 0, -1]]).all()
