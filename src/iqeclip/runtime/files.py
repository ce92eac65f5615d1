"""Small file-system helpers shared by every writer: results are written atomically, and a
bounded pool of writer threads writes them beside the computation."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from iqeclip.errors import UserError, param


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None], durable: bool = False) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash leaves either the old file or the new one, never a half-written file. The file gets
    the mode the umask gives new files, set after ``write`` ran: ``mkstemp`` alone would make it
    0600, and a writer that replaces the temporary file (safetensors does) would keep its own
    mode. ``durable`` fsyncs the file before the rename (checkpoints, cache entries). A failure
    to write (a full disk, a read-only folder) is a one-line :class:`UserError` naming the file,
    and no temporary file is left.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_ATOMIC_TEMPORARY = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")
"""The name of :func:`atomic_write`'s temporary file: ``mkstemp`` puts 8 random characters
(``tempfile``'s lower-case letters, digits and ``_``) between its prefix and suffix."""


def atomic_target(name: str) -> str | None:
    """The file an :func:`atomic_write` was writing when it left the temporary file ``name``
    behind (a kill mid-write: ``.<file>.<8 random characters>.tmp``); None for any other name."""
    found = _ATOMIC_TEMPORARY.fullmatch(name)
    return found.group(1) if found else None


LOCK_TIMEOUT = 120.0
"""Seconds :func:`locked` waits for another process's lock before giving up."""


@contextlib.contextmanager
def locked(path: Path, flag: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (``fcntl.flock``) while the body runs.

    Use it around a read-modify-write of ``path`` (a file replaced by :func:`atomic_write` cannot
    be locked itself: each write is a new file). Another holder, a process or a thread, is waited
    for. The lock file follows the umask and stays in place: removing it would let a process
    that is waiting on it lock a file that is no longer there.

    Args:
        path: the file being updated.
        flag: the option that named it (for the message; :func:`~iqeclip.errors.param` marks it).
        timeout: seconds to wait for another holder.

    Raises:
        UserError: ``<flag> <path>: ...`` when the lock is still held after ``timeout`` seconds
            or the lock file cannot be created.
    """
    lock = path.with_name(f"{path.name}.lock")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = try_lock(lock)
        except OSError as exc:
            raise UserError(f"{flag} {path}: cannot write {lock}: {exc.strerror or exc}") from None
        if fd is not None:
            break
        if time.monotonic() >= deadline:
            raise UserError(
                f"{flag} {path}: another process has been updating it for {timeout:g} s "
                f"(it holds {lock.name}); try again when it is done"
            )
        time.sleep(0.05)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def try_lock(lock: Path) -> int | None:
    """Take an exclusive ``fcntl.flock`` on ``lock`` without waiting: the open descriptor
    (closing it releases the lock, and so does the end of the process), or None when another
    process or thread holds it. The file is created with the umask's mode and left in place.

    Raises:
        OSError: The lock file cannot be created or opened.
    """
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def check_writable(flag: str, path: str | Path | None, folder: bool = False) -> None:
    """Refuse, before any work, an output location that cannot be written.

    Args:
        flag: The option that named it (for the message; :func:`~iqeclip.errors.param` marks it).
        path: The file (or with ``folder``, the folder) to be written; None: nothing to check.
        folder: ``path`` is a folder to create or write into.

    Raises:
        UserError: ``<flag> <path>: <why>`` when it (or the folder it goes into) is a file where a
            folder is needed, a folder where a file is needed, or not writable.
    """
    if path is None:
        return
    path = Path(path)
    target = path if folder else path.parent
    if not folder and path.is_dir():
        raise UserError(f"{flag} {path}: is a folder, not a file")
    if not folder and path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path}: the file is not writable")
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"{flag} {path}: cannot write in {existing} (permission denied or read-only)"
        )


def check_free(flag: str, path: str | Path, overwrite: bool) -> None:
    """Refuse, before any work, an output file that cannot be written or that exists without
    ``overwrite`` (``<flag> <path> exists; pass --overwrite to replace it``)."""
    check_writable(flag, path)
    if Path(path).exists() and not overwrite:
        raise UserError(f"{flag} {path} exists; pass {param('overwrite')} to replace it")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_yaml(data: dict[str, Any], path: str | Path) -> None:
    """Write ``data`` as YAML atomically (temporary file, then rename)."""
    atomic_write_text(Path(path), yaml.safe_dump(data, sort_keys=False))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a :class:`UserError` naming it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a YAML mapping")
    return data


def read_text(path: Path, what: str) -> str:
    """A user's UTF-8 text file (a BOM is dropped); a problem is a :class:`UserError` that names
    ``what`` (e.g. ``support list``, ``param("manifest")``) and the file."""
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from None


WRITER_THREADS = 2
"""Threads of a :class:`WriterPool`: PNG, NumPy and NIfTI encoders release the GIL while they
compress and write, so two threads keep the writing off the model's path."""


class WriterPool:
    """Writes files on a bounded pool of threads while the caller goes on computing.

    ``submit(job)`` runs ``job()`` (which writes its files atomically) on a thread; at most
    ``2 * threads`` jobs wait at once (``submit`` blocks until one is done), so the pictures
    held for writing stay few. ``then(callback)`` calls ``callback()`` in the caller's thread
    once every job submitted before it has finished (checked at each later ``submit``/``then``
    and at :meth:`wait`): predict records an input as done only when its files are on disk. A
    job's error is raised in the caller at the next of these calls. Use as a context manager:
    leaving it waits for the jobs already submitted, so nothing computed is lost, and when it is
    left by an error (a failed write, an interrupt) it still runs the callbacks of every job
    before the first failed one.
    """

    def __init__(self, threads: int = WRITER_THREADS) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="iqeclip-writer")
        self._slots = threading.BoundedSemaphore(2 * threads)
        self._jobs: list[Future] = []  # submitted since the last then()
        self._callbacks: deque[tuple[list[Future], Callable[[], None]]] = deque()

    def submit(self, job: Callable[[], None]) -> None:
        self._slots.acquire()
        future = self._pool.submit(job)
        future.add_done_callback(lambda _: self._slots.release())
        self._jobs.append(future)
        self._run_ready(block=False)

    def then(self, callback: Callable[[], None]) -> None:
        self._callbacks.append((self._jobs, callback))
        self._jobs = []
        self._run_ready(block=False)

    def wait(self) -> None:
        """Wait for every job, raising the first error, and run the callbacks due."""
        self._run_ready(block=True)
        for future in self._jobs:
            future.result()
        self._jobs = []

    def _run_ready(self, block: bool) -> None:
        while self._callbacks:
            jobs, callback = self._callbacks[0]
            if not block and not all(f.done() for f in jobs):
                break
            for future in jobs:
                future.result()
            self._callbacks.popleft()
            callback()
        for future in self._jobs:  # an error surfaces at once, not only at the next then()
            if future.done():
                future.result()

    def __enter__(self) -> WriterPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._pool.shutdown(wait=True)
        if exc_type is not None:  # keep what was written: the callbacks of the jobs that were
            with contextlib.suppress(Exception):
                self._run_ready(block=True)
