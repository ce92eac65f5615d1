"""``test-zero`` / ``test-few``: evaluate a trained checkpoint on the target's test split."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from iqeclip.config import DEFAULT_SELECT, RunConfig
from iqeclip.engine.cache import open_cache
from iqeclip.engine.evaluate import evaluate, write_metrics_json
from iqeclip.engine.sources import run_manifest, test_set
from iqeclip.engine.trainer import (
    BadInputs,
    RunLog,
    check_outputs,
    record_fields,
    refuse_overwrite,
)
from iqeclip.errors import UserError
from iqeclip.inference.inputs import checkpoint_reading
from iqeclip.model.checkpoint import read_checkpoint
from iqeclip.model.detector import IQEClip
from iqeclip.runtime import distributed
from iqeclip.runtime.device import loader_workers, resolve_device


def test(model_overrides: dict[str, Any], run: RunConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on the target's test split.

    Args:
        model_overrides: model flags given explicitly; the rest comes from the checkpoint.
        run: run settings (``ckpt_path`` required).
    """
    if not run.ckpt_path:
        raise UserError("--ckpt_path is required")
    check_outputs(run, training=False)
    metrics_json = Path(run.metrics_json) if run.metrics_json else None
    report_dir = Path(run.report_dir) if run.report_dir else None
    refuse_overwrite(run, metrics_json, report_dir / "metrics.json" if report_dir else None)
    stored, _, meta = read_checkpoint(run.ckpt_path)  # a bad checkpoint stops before any work
    run = _trained_like(run, meta.get("run", {}))
    img_size = model_overrides.get("img_size", stored.img_size)
    log = RunLog(run.log_path)
    try:
        device = resolve_device(run.device)
        bad = BadInputs(run.on_bad_input, img_size)
        reading = checkpoint_reading(meta, run.window, run.percentile, run.axis, run.orientation)
        manifest = run_manifest(run, reading, bad, log)
        samples, pixel = test_set(run, reading, bad, manifest)
        folder = report_dir or Path(run.metrics_json or run.log_path or ".").parent
        bad.report(folder, f"test_{run.obj}", log)
        model = IQEClip.from_checkpoint(run.ckpt_path, device, **model_overrides)
        for key, value in {**model.config.to_dict(), **dataclasses.asdict(run)}.items():
            log.detail(f"{key}: {value}")
        cache = open_cache(
            model, len(samples), run.cache_dir, run.cache_dtype, run.cache_budget_gb, log
        )
        workers = loader_workers(run.workers, device)
        scored: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        histograms: dict[str, np.ndarray] | None = {} if run.report_dir else None
        metrics = evaluate(
            model,
            samples,
            run.setting,
            pixel,
            run.batch_size,
            workers,
            f"{run.obj} test",
            cache,
            scores_out=scored,
            histograms_out=histograms,
        )
        log.metrics(run.obj, metrics)
        if cache is not None:
            cache.flush()
            log(cache.hit_rate())
        if metrics_json is not None and distributed.is_main():
            write_metrics_json(metrics_json, metrics, **record_fields(run))
        if run.report_dir:
            from iqeclip.report.run import write_test_report

            html = write_test_report(
                run.report_dir,
                model,
                samples,
                *scored[""],
                metrics,
                run,
                pixel_histograms=(histograms or {}).get(""),
                selection=meta.get("run", {}).get("select") or DEFAULT_SELECT[run.setting],
            )
            log(f"report: {html}")
        return metrics
    finally:
        log.close()


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
            raise UserError(f"{run.ckpt_path} records no shot count: pass --shot")
        return dataclasses.replace(run, shot=shot)
    if shot is not None and run.shot != shot:
        raise UserError(
            f"--shot {run.shot}: {run.ckpt_path} was trained {shot}-shot (leave --shot out, or "
            f"pass --shot {shot})"
        )
    return run
