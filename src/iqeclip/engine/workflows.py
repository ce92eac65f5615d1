"""The paper's two training workflows: zero-shot and few-shot.

Zero-shot (leave one dataset out): train on the ``test`` splits of every other dataset in
``--data_path`` with dataset-homogeneous batches, evaluate on the target's ``test`` split.
Few-shot: fine-tune on K abnormal + K normal ``valid`` images of the target, each in 11 fixed
augmentations, evaluate on the target's ``test`` split. Both start every trainable module from
the same seeded initial state.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random
import warnings
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, DataLoader

from iqeclip.config import DEFAULT_SELECT, ModelConfig, RunConfig
from iqeclip.data.datasets import (
    HomogeneousBatchSampler,
    ImageDataset,
    ShuffledBatchSampler,
    augmented_support,
)
from iqeclip.data.layout import (
    available_datasets,
    has_masks,
    list_split,
    samples_from_folders,
    support_set,
)
from iqeclip.data.manifest import Manifest, has_pixel_masks
from iqeclip.data.readers import Reading
from iqeclip.data.sample import Sample
from iqeclip.engine.evaluate import evaluate_groups, selection_score
from iqeclip.engine.prologue import open_run
from iqeclip.engine.runlog import RunLog
from iqeclip.engine.sources import manifest_support, run_reading, test_set, with_reading
from iqeclip.engine.testing import ReportWriter
from iqeclip.engine.trainer import (
    BadInputs,
    Select,
    Trainer,
    check_outputs,
    private_generator,
    sample_key,
)
from iqeclip.errors import UserError, param
from iqeclip.runtime.device import pin

EVALS_PER_EPOCH = 5  # zero-shot: evaluate before each fifth of an epoch, as published


def _held_out(samples: list[Sample], seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split off a tenth of each class (at least one) as source validation: (train, val)."""
    rng = random.Random(seed)
    train, val = [], []
    for label in (0, 1):
        group = [s for s in samples if s.label == label]
        rng.shuffle(group)
        k = max(1, len(group) // 10) if len(group) > 1 else 0
        val += group[:k]
        train += group[k:]
    return train, val


def _warn_target_test(log: RunLog) -> None:
    msg = (
        "--select target-test picks the checkpoint on the target test set, as the published "
        "protocol does; its test metrics are optimistic"
    )
    warnings.warn(msg, stacklevel=3)
    log(f"warning: {msg}")


def _zero_shot_sources(
    run: RunConfig, reading: Reading, bad: BadInputs, manifest: Manifest | None
) -> list[tuple[str, list[Sample], bool]]:
    """``(name, samples, pixel masks)`` of each zero-shot training source: the test split of
    every other dataset in ``--data_path``, and the train rows of the manifest."""
    listed = [] if manifest is None else manifest.split("train")
    names = [n for n in available_datasets(run.data_path, run.layout) if n != run.obj]
    sources = [
        (
            n,
            with_reading(
                list_split(run.data_path, n, "test", bad.missing_masks, run.layout), reading
            ),
            has_masks(run.data_path, n, run.layout),
        )
        for n in names
    ] + ([("manifest", listed, has_pixel_masks(listed))] if listed else [])
    if not sources:
        raise UserError(
            f"{param('data_path')} {run.data_path}: zero-shot training on {run.obj} needs other "
            f"datasets (or the train rows of a {param('manifest')})"
        )
    return sources


def train_zero(
    model_cfg: ModelConfig, run: RunConfig, report: ReportWriter | None = None
) -> dict[str, Any]:
    """Zero-shot training on the other datasets; returns the target test metrics.

    ``report`` writes the final test's run folder (required with ``run.report_dir``).
    """
    run = dataclasses.replace(run, setting="zero")
    select: Select = run.select or DEFAULT_SELECT["zero"]
    if select not in ("last", "source-val", "target-test"):
        raise UserError(f"{param('select')} {select!r} must be last, source-val or target-test")
    check_outputs(run, training=True)
    with open_run(run, model_cfg.img_size, functools.partial(run_reading, run)) as start:
        log, bad, reading, manifest = start.log, start.bad, start.reading, start.manifest
        test_samples, target_pixel = test_set(run, reading, bad, manifest)
        sources = _zero_shot_sources(run, reading, bad, manifest)
        parts, val = [], []
        for name, samples, pixel in sources:
            samples = bad.check(samples, pixel)
            if select == "source-val":
                samples, held = _held_out(samples, run.seed)
                val.append((name, held, pixel))
            parts.append(ImageDataset(samples, model_cfg.img_size, segmentation=pixel))
        n_images = sum(len(p) for p in parts) + sum(len(h) for _, h, _ in val) + len(test_samples)
        trainer = Trainer(model_cfg, run, log, n_images, report)
        bad.report(trainer.ckpt.parent, trainer.ckpt.stem, log)
        counts = (f"{n} ({len(p)})" for (n, _, _), p in zip(sources, parts, strict=True))
        log(f"sources: {', '.join(counts)}")
        starts = np.cumsum([0] + [len(p) for p in parts])
        groups = [range(int(a), int(b)) for a, b in itertools.pairwise(starts)]
        sampler = trainer.shard(HomogeneousBatchSampler(groups, run.batch_size, run.seed))
        loader = DataLoader(
            ConcatDataset(parts),
            batch_sampler=sampler,
            num_workers=trainer.workers,
            pin_memory=pin(trainer.device),
            generator=private_generator(run.seed),
        )
        if select == "target-test":
            _warn_target_test(log)

        def checkpoint_eval(epoch: int, step: int) -> None:
            if select == "target-test":
                metrics = trainer.evaluate(test_samples, target_pixel, "target test")
                log.metrics(run.obj, metrics)
                score = selection_score(metrics)
            else:
                results = evaluate_groups(
                    trainer.model,
                    val,
                    "zero",
                    2 * run.batch_size,
                    trainer.workers,
                    "source val",
                    trainer.cache,
                )
                for name, metrics in results.items():
                    log.metrics(f"source-val {name}", metrics)
                score = float(np.mean([selection_score(m) for m in results.values()]))
            trainer.consider(score, {"epoch": epoch, "step": step}, f"epoch {epoch} batch {step}")

        n_batches = len(sampler.batches())
        eval_steps = {round(k * n_batches / EVALS_PER_EPOCH) for k in range(EVALS_PER_EPOCH)}

        def before_step(epoch: int, step: int) -> None:
            if select != "last" and step in eval_steps:
                checkpoint_eval(epoch, step)

        trainer.fit(loader, sampler, before_step=before_step)
        if select != "last":
            checkpoint_eval(run.epochs, 0)
        else:
            trainer.save_checkpoint({"epoch": run.epochs})
        return trainer.finish(test_samples, target_pixel, select)


def train_few(
    model_cfg: ModelConfig, run: RunConfig, report: ReportWriter | None = None
) -> dict[str, Any]:
    """Few-shot training on K abnormal + K normal support images; returns the test metrics.

    ``report`` writes the final test's run folder (required with ``run.report_dir``).
    """
    run = dataclasses.replace(run, setting="few")
    select: Select = run.select or DEFAULT_SELECT["few"]
    if select not in ("last", "target-test"):
        raise UserError(
            f"{param('select')} {select!r}: few-shot training supports last or target-test "
            "(no source data)"
        )
    check_outputs(run, training=True)
    with open_run(run, model_cfg.img_size, functools.partial(run_reading, run)) as start:
        log, bad, reading, manifest = start.log, start.bad, start.reading, start.manifest
        own = bool(run.normal_dir or run.abnormal_dir)
        if own and manifest is not None:
            raise UserError(
                f"{param('manifest')} and {param('normal_dir')}/{param('abnormal_dir')} are two "
                "sources: give one"
            )
        if manifest is not None:
            abnormal, normal, pixel = manifest_support(run, manifest, bad)
        elif own:
            if not (run.normal_dir and run.abnormal_dir):
                raise UserError(
                    "few-shot on your own data needs both "
                    f"{param('normal_dir')} and {param('abnormal_dir')}"
                )
            abnormal, normal = samples_from_folders(run.normal_dir, run.abnormal_dir, run.masks_dir)
            pixel = run.masks_dir is not None
            run = dataclasses.replace(run, shot=len(abnormal))
        else:
            pixel = has_masks(run.data_path, run.obj, run.layout)
            abnormal, normal = support_set(
                run.data_path,
                run.obj,
                run.shot,
                run.iterate,
                run.fewshot_seed_dir,
                run.seed,
                layout=run.layout,
            )
        abnormal = bad.check(with_reading(abnormal, reading), pixel)
        normal = bad.check(with_reading(normal, reading), False)
        # the test set's masks belong to it (the manifest's test rows or <obj>_AD), whatever the
        # support holds
        optional = own or manifest is not None
        test_samples, test_pixel = test_set(run, reading, bad, manifest, optional)
        if not abnormal or not normal:
            raise UserError(f"no usable support images are left after {param('on_bad_input')} skip")
        support = augmented_support(abnormal, normal, model_cfg.img_size, pixel)
        trainer = Trainer(model_cfg, run, log, len(support) + len(test_samples), report)
        trainer.support = [sample_key(s) for s in (*abnormal, *normal)]
        trainer.support_abnormal = len(abnormal)
        bad.report(trainer.ckpt.parent, trainer.ckpt.stem, log)
        log(
            f"support: {len(abnormal)} abnormal + {len(normal)} normal -> {len(support)} augmented samples"
        )
        sampler = trainer.shard(ShuffledBatchSampler(len(support), run.batch_size, run.seed))
        loader = DataLoader(support, batch_sampler=sampler, generator=private_generator(run.seed))
        if select == "target-test":
            _warn_target_test(log)

        def after_epoch(epoch: int) -> None:
            if select == "target-test":
                metrics = trainer.evaluate(test_samples, test_pixel, "target test")
                log.metrics(run.obj, metrics)
                trainer.consider(selection_score(metrics), {"epoch": epoch}, f"epoch {epoch}")

        trainer.fit(loader, sampler, after_epoch=after_epoch)
        if select == "last":
            trainer.save_checkpoint({"epoch": run.epochs})
        return trainer.finish(test_samples, test_pixel, select)
