"""Where a run's samples come from: the BMAD folder layout or a CSV manifest (``--manifest``).

Every sample carries the run's :class:`~iqeclip.data.readers.Reading` (``--window`` /
``--percentile`` / ``--axis`` / ``--orientation``), so the data loaders read it as ``predict``
does. With a manifest, the few-shot support is drawn from its ``train`` rows, an extra zero-shot
source is its ``train`` rows, and the test set is its ``test`` rows (else ``<obj>``'s test split).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from iqeclip.config import RunConfig
from iqeclip.data.layout import draw_support, has_masks, has_split, list_split
from iqeclip.data.manifest import Manifest, has_pixel_masks, read_manifest
from iqeclip.data.readers import DEFAULT_READING, Reading, reading_from
from iqeclip.data.sample import Sample
from iqeclip.engine.runlog import RunLog
from iqeclip.engine.trainer import BadInputs, sample_key

__all__ = ["manifest_support", "run_manifest", "run_reading", "test_set", "with_reading"]


def run_reading(run: RunConfig) -> Reading:
    """The run's reading options and label values (checked before any work)."""
    return reading_from(run.window, run.percentile, run.axis, run.orientation, run.label_values)


def with_reading(samples: Sequence[Sample], reading: Reading) -> list[Sample]:
    """The samples, read with ``reading``."""
    if reading == DEFAULT_READING:
        return list(samples)
    return [dataclasses.replace(s, reading=reading) for s in samples]


def run_manifest(
    run: RunConfig, reading: Reading, bad: BadInputs, log: RunLog | None = None
) -> Manifest | None:
    """The run's manifest (None without ``--manifest``); its skipped rows join ``bad``'s."""
    if not run.manifest:
        return None
    manifest = read_manifest(run.manifest, reading, run.min_lesion_px, run.margin, run.on_bad_input)
    bad.skipped += manifest.skipped
    if log is not None:
        for split in ("train", "test"):
            log(manifest.summary(split))
        shared = {sample_key(s) for s in manifest.split("train")}
        shared &= {sample_key(s) for s in manifest.split("test")}
        if shared:
            log(
                f"warning: {len(shared)} samples of {run.manifest} are in both its train and "
                "test rows (rows without a split are in every split): the test is optimistic"
            )
    return manifest


def test_set(
    run: RunConfig,
    reading: Reading,
    bad: BadInputs,
    manifest: Manifest | None,
    optional: bool = False,
) -> tuple[list[Sample], bool]:
    """The checked test samples and whether pixel metrics apply.

    The manifest's ``test`` rows when it has any, else ``<obj>``'s test split (none when
    ``optional`` and the split folder does not exist).
    """
    if manifest is not None and manifest.split("test"):
        samples = manifest.split("test")
        pixel = has_pixel_masks(samples)
    else:
        if optional and not has_split(run.data_path, run.obj, "test", run.layout):
            return [], False
        pixel = has_masks(run.data_path, run.obj, run.layout)
        samples = with_reading(
            list_split(run.data_path, run.obj, "test", bad.missing_masks, run.layout), reading
        )
    return bad.check(samples, pixel), pixel


def manifest_support(
    run: RunConfig, manifest: Manifest, bad: BadInputs
) -> tuple[list[Sample], list[Sample], bool]:
    """K abnormal and K normal support samples drawn with ``--seed`` from the manifest's ``train``
    rows (the usable ones), and whether they all have masks."""
    pool = manifest.split("train")
    pixel = has_pixel_masks(pool)
    pool = bad.check(pool, pixel)
    abnormal = [s for s in pool if s.label == 1]
    normal = [s for s in pool if s.label == 0]
    where = f"the train rows of {manifest.path}"
    abnormal, normal = draw_support(abnormal, normal, run.shot, run.seed, (where, where))
    return abnormal, normal, pixel
