"""Frozen-feature cache: compute the backbone once per image, read it back ever after.

The backbone is frozen and unmodified and the inputs are fixed (zero-shot has no augmentation,
few-shot augmentation is deterministic), so the tapped patch tokens and the global embedding of
an image never change. They are stored on disk, one ``.bin`` file per image,
under a folder named by a hash of everything that changes them:

* the backbone: architecture, weights (a file by path, size and modification time), activation,
  input normalisation, vision-tower precision, image size and tapped blocks;
* the image: a hash of the exact model input (the resized uint8 pixels, or the augmented floats).

A foreign or stale entry therefore has another name and is never read. Each entry is the raw
feature bytes followed by their CRC-32, written to a temporary file, fsynced and renamed into
place; on reading, an entry of the wrong length (a zero-byte file) or with a wrong checksum
(same-size garbage, a flipped bit) is a counted miss and is recomputed and rewritten. The
checksum guards against accidents, not forgery (the entries are the user's own files), as the
CRCs of storage engines and of zip, gzip and PNG do; it is checked on every read of every entry,
and CRC-32 checks a 4.7 MB entry of the paper configuration in 2 ms where BLAKE2b took 9
(docs/performance.md). The image keys stay BLAKE2b: those must not collide.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqeclip.data.readers import as_input
from iqeclip.errors import UserError, param
from iqeclip.model.detector import IQEClip
from iqeclip.runtime.files import WriterPool, atomic_write, atomic_write_text

FORMAT = 3  # 3: CRC-32 instead of BLAKE2b checksums (a new folder: old entries are not read)
DTYPES = {"fp32": np.float32, "fp16": np.float16}
CHECKSUM_BYTES = 4


def _checksum(body: bytes) -> bytes:
    return zlib.crc32(body).to_bytes(CHECKSUM_BYTES, "little")


def backbone_key(model: IQEClip) -> dict[str, Any]:
    """Everything about the frozen half of ``model`` that changes its features."""
    cfg = model.config
    weights: Any = cfg.pretrain
    path = Path(cfg.pretrain).expanduser()
    if cfg.pretrain.lower() != "none" and path.is_file():
        st = path.stat()
        weights = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {
        "format": FORMAT,
        "model_name": cfg.model_name,
        "weights": weights,
        "activation": model.activation,
        "normalize": cfg.normalize,
        "precision": cfg.precision,
        "img_size": cfg.img_size,
        "features_list": cfg.features_list,
    }


def image_keys(images: torch.Tensor) -> list[str]:
    """Content hashes of a CPU batch of model inputs ``(B, 3, H, W)`` (uint8 or float)."""
    array = images.contiguous().numpy()
    tag = f"{array.dtype}{array.shape[1:]}".encode()
    return [hashlib.blake2b(tag + item.tobytes(), digest_size=20).hexdigest() for item in array]


class FeatureCache:
    """On-disk cache of ``(patch tokens (T, L, Dv), global embedding (D,))`` per image.

    Args:
        root: cache folder (one sub-folder per backbone key).
        model: the detector whose backbone is cached.
        dtype: ``fp32`` (exact) or ``fp16`` (half the disk; maps deviate slightly).
    """

    def __init__(self, root: str | Path, model: IQEClip, dtype: str = "fp32") -> None:
        if dtype not in DTYPES:
            raise UserError(f"{param('cache_dtype')} must be fp32 or fp16, got {dtype!r}")
        self.model = model
        self.dtype = DTYPES[dtype]
        key = backbone_key(model)
        key["dtype"] = dtype
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        self.dir = Path(root).expanduser() / digest
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"{param('cache_dir')} {root}: cannot create it ({exc.strerror})"
            ) from None
        meta = self.dir / "backbone.json"
        if not meta.exists():
            atomic_write_text(meta, json.dumps(key, indent=2, sort_keys=True))
        arch, cfg = model.arch, model.config
        grid = cfg.img_size // arch.patch_size
        self.shape = (len(cfg.features_list), grid * grid, arch.vision_width)
        self.entry_len = int(np.prod(self.shape)) + arch.embed_dim
        self.hits = 0
        self.misses = 0
        self._writes = WriterPool()  # entries go to disk while the next batch is computed
        self._writing: dict[str, np.ndarray] = {}  # and are read from here until they are there

    @property
    def entry_bytes(self) -> int:
        return self.entry_len * np.dtype(self.dtype).itemsize

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.bin"

    def _load(self, key: str) -> np.ndarray | None:
        """An entry whose length and checksum are right, else None (a miss: it is rewritten)."""
        if key in self._writing:
            return self._writing[key]
        try:
            data = self._path(key).read_bytes()
        except OSError:
            return None
        body, digest = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
        if len(body) != self.entry_bytes or _checksum(body) != digest:
            return None
        return np.frombuffer(body, dtype=self.dtype)

    def _store(self, key: str, entry: np.ndarray) -> None:
        """Write an entry on a writer thread (atomically, fsynced); :meth:`flush` waits."""

        entry = np.ascontiguousarray(entry, dtype=self.dtype)

        def write() -> None:
            body = entry.tobytes()
            try:
                atomic_write(
                    self._path(key), lambda tmp: tmp.write_bytes(body + _checksum(body)), True
                )
            finally:
                self._writing.pop(key, None)

        self._writing[key] = entry
        self._writes.submit(write)

    def flush(self) -> None:
        """Wait for the entries still being written (a failed write is raised here)."""
        self._writes.wait()

    def features(
        self, images: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen features of a CPU batch, from disk where cached, else computed and stored.

        Args:
            images: ``(B, 3, H, W)`` model inputs on the CPU (uint8 pixels or floats in [0, 1]).
            device: where the features are wanted.

        Returns:
            patch tokens ``(T, B, L, Dv)`` and global embedding ``(B, D)``, float32 on ``device``.
        """
        keys = image_keys(images)
        entries = [self._load(k) for k in keys]
        missing = [i for i, e in enumerate(entries) if e is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:  # the whole batch, as --no_cache computes it, whatever the kernels do
            patch, glob = self.model.features(as_input(images, device))
            flat = torch.cat([patch.transpose(0, 1).flatten(1), glob], dim=1)
            flat = flat.cpu().numpy().astype(self.dtype)
            for i in missing:
                self._store(keys[i], flat[i])
            if self.dtype == np.float32:
                return patch.float(), glob.float()
            entries = list(flat)
        # each entry copied once, straight into the layout the backbone returns (contiguous
        # (T, B, L, Dv)): some kernels' rounding depends on the strides, and the head must
        # compute on the same tensors from the cache as from the backbone
        t, n_patch, width = self.shape
        size = t * n_patch * width
        patch = np.empty((t, len(entries), n_patch, width), dtype=np.float32)
        glob = np.empty((len(entries), self.entry_len - size), dtype=np.float32)
        for i, entry in enumerate(entries):
            patch[:, i] = entry[:size].reshape(t, n_patch, width)
            glob[i] = entry[size:]
        return torch.from_numpy(patch).to(device), torch.from_numpy(glob).to(device)

    def hit_rate(self) -> str:
        total = self.hits + self.misses
        rate = 100.0 * self.hits / total if total else 0.0
        return f"feature cache: {self.hits} hits, {self.misses} misses ({rate:.1f}% hit rate)"


def open_cache(
    model: IQEClip,
    n_images: int,
    cache_dir: str | Path | None,
    dtype: str,
    budget_gb: float,
    log=print,
) -> FeatureCache | None:
    """The feature cache if it is wanted and fits, else ``None`` (with a line saying why).

    Args:
        model: the detector.
        n_images: how many distinct inputs the run will see (for the size estimate).
        cache_dir: cache folder; ``None`` turns the cache off.
        dtype: ``fp32`` or ``fp16``.
        budget_gb: the largest estimate (GB) for which the cache is used.
        log: where to print the decision.
    """
    if cache_dir is None:
        log("feature cache: off")
        return None
    cache = FeatureCache(cache_dir, model, dtype)
    estimate = n_images * cache.entry_bytes
    free = shutil.disk_usage(cache.dir).free
    if estimate > budget_gb * 1e9 or estimate > 0.9 * free:
        log(
            f"feature cache: off (needs {estimate / 1e9:.2f} GB for {n_images} images; budget "
            f"{budget_gb:g} GB, {free / 1e9:.1f} GB free; raise --cache_budget_gb or use --cache_dtype fp16)"
        )
        return None
    log(
        f"feature cache: {cache.dir} ({estimate / 1e6:.1f} MB estimated for {n_images} images, {dtype})"
    )
    return cache
