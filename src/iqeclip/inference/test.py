"""``test-zero`` / ``test-few``: evaluate a trained checkpoint on the target's test split."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from iqeclip.config import DEFAULT_SELECT, RunConfig
from iqeclip.engine.cache import open_cache
from iqeclip.engine.prologue import open_run
from iqeclip.engine.sources import test_set
from iqeclip.engine.testing import run_test
from iqeclip.engine.trainer import check_outputs, refuse_overwrite
from iqeclip.errors import UserError, param
from iqeclip.inference.inputs import checkpoint_reading
from iqeclip.model.checkpoint import read_checkpoint
from iqeclip.model.detector import IQEClip
from iqeclip.report.run import write_test_report
from iqeclip.runtime.device import loader_workers, resolve_device


def test(model_overrides: dict[str, Any], run: RunConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on the target's test split.

    Args:
        model_overrides: model flags given explicitly; the rest comes from the checkpoint.
        run: run settings (``ckpt_path`` required).
    """
    if not run.ckpt_path:
        raise UserError(f"{param('ckpt_path')} is required")
    check_outputs(run, training=False)
    metrics_json = Path(run.metrics_json) if run.metrics_json else None
    report_dir = Path(run.report_dir) if run.report_dir else None
    refuse_overwrite(run, metrics_json, report_dir / "metrics.json" if report_dir else None)
    stored, _, meta = read_checkpoint(run.ckpt_path)  # a bad checkpoint stops before any work
    run = _trained_like(run, meta.get("run", {}))
    img_size = model_overrides.get("img_size", stored.img_size)
    reading = functools.partial(
        checkpoint_reading,
        meta,
        run.window,
        run.percentile,
        run.axis,
        run.orientation,
        run.label_values,
    )
    with open_run(run, img_size, reading) as start:
        log = start.log
        device = resolve_device(run.device)
        samples, pixel = test_set(run, start.reading, start.bad, start.manifest)
        folder = report_dir or Path(run.metrics_json or run.log_path or ".").parent
        start.bad.report(folder, f"test_{run.obj}", log)
        model = IQEClip.from_checkpoint(run.ckpt_path, device, **model_overrides)
        for key, value in {**model.config.to_dict(), **dataclasses.asdict(run)}.items():
            log.detail(f"{key}: {value}")
        cache = open_cache(
            model, len(samples), run.cache_dir, run.cache_dtype, run.cache_budget_gb, log
        )
        result = run_test(
            model,
            samples,
            pixel,
            run,
            batch_size=run.batch_size,
            workers=loader_workers(run.workers, device),
            cache=cache,
            log=log,
            selection=meta.get("run", {}).get("select") or DEFAULT_SELECT[run.setting],
            report=write_test_report,
        )
        return result.metrics


def _trained_like(run: RunConfig, trained: dict[str, Any]) -> RunConfig:
    """Refuse a test whose setting or ``--shot`` is not the checkpoint's (the metrics record
    would name a protocol that did not produce them); ``shot=None`` takes the checkpoint's."""
    setting = trained.get("setting")
    if setting is not None and setting != run.setting:
        how = "zero-shot" if setting == "zero" else f"few-shot ({trained.get('shot')}-shot)"
        raise UserError(
            f"{run.ckpt_path} was trained {how}: test it with test-{setting}, not "
            f"test-{run.setting}"
        )
    shot = trained.get("shot")
    if run.setting != "few":
        return run
    if run.shot is None:
        if shot is None:
            raise UserError(f"{run.ckpt_path} records no shot count: pass {param('shot')}")
        return dataclasses.replace(run, shot=shot)
    if shot is not None and run.shot != shot:
        raise UserError(
            f"{param('shot')} {run.shot}: {run.ckpt_path} was trained {shot}-shot (leave "
            f"{param('shot')} out, or pass {param('shot')} {shot})"
        )
    return run
