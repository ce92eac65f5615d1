"""The paper's workflows: zero-shot and few-shot training, and testing.

Zero-shot (leave one dataset out): train on the ``test`` splits of every other dataset in
``--data_path`` with dataset-homogeneous batches, evaluate on the target's ``test`` split.
Few-shot: fine-tune on K abnormal + K normal ``valid`` images of the target, each in 11 fixed
augmentations, evaluate on the target's ``test`` split. Both start every trainable module from
the same seeded initial state.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader
from tqdm import tqdm

from iqeclip.config import ModelConfig
from iqeclip.data.datasets import (
    EpochBatchSampler,
    HomogeneousBatchSampler,
    ImageDataset,
    ShardedBatchSampler,
    ShuffledBatchSampler,
    augmented_support,
)
from iqeclip.data.layout import (
    Sample,
    available_datasets,
    has_masks,
    list_split,
    samples_from_folders,
    support_set,
)
from iqeclip.data.validate import Skipped, validate_samples, write_skipped
from iqeclip.engine.cache import FeatureCache, default_cache_dir, open_cache
from iqeclip.engine.evaluate import (
    evaluate,
    evaluate_groups,
    frozen_features,
    metric_lines,
    selection_score,
    write_metrics_json,
)
from iqeclip.engine.resume import FIXED as RESUME_FIXED
from iqeclip.engine.resume import load_state, save_state, state_path
from iqeclip.errors import UserError
from iqeclip.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from iqeclip.model.detector import IQEClip
from iqeclip.model.losses import iqe_loss
from iqeclip.model.scoring import Setting
from iqeclip.runtime import distributed

Select = Literal["last", "source-val", "target-test"]
TEMP_LR = 0.01  # learning rate of the text-branch temperature, as published
BETAS = (0.5, 0.999)
EVALS_PER_EPOCH = 5  # zero-shot: evaluate before each fifth of an epoch, as published


@dataclass
class RunConfig:
    """Everything about a run that is not the model.

    Attributes:
        obj: target dataset name (``Brain``, ``Liver``, ...).
        data_path: folder holding the ``<Name>_AD`` datasets.
        setting: ``zero`` or ``few``.
        shot: K for few-shot.
        iterate: few-shot support: ``0`` reads the ``<K>-shot.txt`` list, ``-1`` draws with the seed.
        fewshot_seed_dir: where ``<Name>/<K>-shot.txt`` lists live (default: see the data docs).
        batch_size: training batch size (evaluation uses twice this).
        epochs: training epochs.
        learning_rate: learning rate of everything but the temperature.
        seed: seeds python, numpy and torch.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        workers: DataLoader worker processes (``None``: 4 on CUDA, 0 on CPU).
        select: checkpoint selection (``last``, ``source-val``, ``target-test``).
        save_dir: checkpoint folder (training).
        ckpt_path: checkpoint to test.
        log_path: log file (appended).
        metrics_json: write the final metrics here as JSON.
        overwrite: allow replacing an existing checkpoint or metrics file.
        cache_dir: frozen-feature cache folder (``None``: no cache).
        cache_dtype: ``fp32`` (exact) or ``fp16`` cache entries.
        cache_budget_gb: use the cache only if its estimated size fits.
        normal_dir: few-shot on your own data: folder of normal support images.
        abnormal_dir: few-shot on your own data: folder of abnormal support images.
        masks_dir: masks of the abnormal support images (same file names), optional.
        report_dir: testing: write scores, examples and an HTML/markdown report here.
        resume: continue an interrupted training run from its saved state.
        save_every: save the training state every this many steps (and at each epoch end).
        on_bad_input: ``error`` stops at the first unusable file before any work; ``skip`` leaves
            such files out, counts them and lists them in the run folder.
    """

    obj: str = "Brain"
    data_path: str = "./data"
    setting: Setting = "zero"
    shot: int = 4
    iterate: int = 0
    fewshot_seed_dir: str | None = None
    batch_size: int = 16
    epochs: int = 50
    learning_rate: float = 1e-4
    seed: int = 42
    device: str = "auto"
    workers: int | None = None
    select: Select | None = None
    save_dir: str = "./ckpt"
    ckpt_path: str | None = None
    log_path: str | None = None
    metrics_json: str | None = None
    overwrite: bool = False
    cache_dir: str | None = str(default_cache_dir())
    cache_dtype: str = "fp32"
    cache_budget_gb: float = 50.0
    normal_dir: str | None = None
    abnormal_dir: str | None = None
    masks_dir: str | None = None
    report_dir: str | None = None
    resume: bool = False
    save_every: int = 50
    on_bad_input: str = "error"


class RunLog:
    """Lines to the console (above the progress bars) and appended to the log file."""

    def __init__(self, path: str | Path | None) -> None:
        self.file: TextIO | None = None
        self.active = distributed.is_main()  # under torchrun only rank 0 logs
        if path is not None and self.active:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def __call__(self, line: str) -> None:
        if not self.active:
            return
        tqdm.write(line, file=sys.stdout)
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()

    def metrics(self, name: str, metrics: dict[str, Any]) -> None:
        """The published ``<name> AUC : 0.xxxx`` (and ``pAUC``) lines."""
        for line in metric_lines(name, metrics):
            self(line)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class BadInputs:
    """Checks every sample before any work under the ``--on_bad_input`` policy."""

    def __init__(self, policy: str, size: int) -> None:
        self.policy, self.size = policy, size
        self.skipped: list[Skipped] = []

    @property
    def missing_masks(self) -> str:
        """How :func:`list_split` treats a missing mask under this policy."""
        return "keep" if self.policy == "skip" else "error"

    def check(self, samples: list[Sample], masks_expected: bool) -> list[Sample]:
        good, skipped = validate_samples(samples, self.size, self.policy, masks_expected)
        self.skipped += skipped
        return good

    def report(self, folder: Path, name: str, log: RunLog) -> None:
        """Write the skipped files to ``folder/<name>_skipped.csv`` (rank 0) and say so."""
        if not self.skipped:
            return
        path = folder / f"{name}_skipped.csv"
        if distributed.is_main():
            write_skipped(self.skipped, path)
        log(
            f"skipped {len(self.skipped)} unusable input files (--on_bad_input skip), listed in {path}"
        )


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; anything else must be usable."""
    if distributed.is_distributed() and (
        (device == "auto" and torch.cuda.is_available()) or device == "cuda"
    ):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a torch device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    return dev


def _workers(run: RunConfig, device: torch.device) -> int:
    return run.workers if run.workers is not None else (4 if device.type == "cuda" else 0)


def make_optimizer(model: IQEClip, learning_rate: float) -> torch.optim.Adam:
    """Adam (0.5, 0.999): ``learning_rate`` for the head, 0.01 for the temperature."""
    temp = model.head.class_tokens.prompt_temp
    rest = [p for p in model.head.parameters() if p is not temp]
    return torch.optim.Adam(
        [{"params": rest, "lr": learning_rate}, {"params": [temp], "lr": TEMP_LR}], betas=BETAS
    )


def train_step(
    model: IQEClip,
    optimizer: torch.optim.Optimizer,
    batch: Sequence[torch.Tensor],
    cache: FeatureCache | None = None,
    head: torch.nn.Module | None = None,
) -> float:
    """One optimisation step on a CPU batch ``(images, masks, labels, segmentation flags)``.

    ``head`` is the module to run the trainable half through (the DistributedDataParallel
    wrapper of ``model.head`` under torchrun); default ``model.head``.
    """
    device = next(model.head.parameters()).device
    images, masks, labels, seg = batch
    patch, glob = frozen_features(model, images, device, cache)
    logits = (head or model.head)(patch, glob, model.backbone.text)
    loss = iqe_loss(logits, masks.to(device), labels.to(device), segmentation=bool(seg[0]))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _private_generator(seed: int) -> torch.Generator:
    """A generator of the DataLoader's own: creating an epoch's iterator then draws from it, not
    from the global RNG that dropout uses, so a run resumed mid-epoch sees the same random stream."""
    return torch.Generator().manual_seed(seed)


def _checkpoint_path(run: RunConfig) -> Path:
    name = f"{run.obj}.pth" if run.setting == "zero" else f"{run.obj}_{run.shot}.pth"
    return Path(run.save_dir).expanduser() / name


def _refuse_overwrite(run: RunConfig, *paths: Path | None) -> None:
    for path in paths:
        if path is not None and path.exists() and not run.overwrite:
            raise UserError(f"{path} exists; pass --overwrite to replace it")


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


class Trainer:
    """Shared machinery of the two training workflows: model, optimiser, selection, saving."""

    def __init__(self, model_cfg: ModelConfig, run: RunConfig, log: RunLog, n_images: int) -> None:
        self.run = run
        self.log = log
        self.device = resolve_device(run.device)
        self.workers = _workers(run, self.device)
        self.ckpt = _checkpoint_path(run)
        self.state_path = state_path(self.ckpt)
        if not run.resume:
            _refuse_overwrite(run, self.ckpt, Path(run.metrics_json) if run.metrics_json else None)
        seed_everything(run.seed)
        self.model = IQEClip.build(model_cfg, self.device)
        self.optimizer = make_optimizer(self.model, run.learning_rate)
        self.head: torch.nn.Module = self.model.head
        if distributed.is_distributed():
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.head = DistributedDataParallel(self.model.head, device_ids=ids)
        self.best = -float("inf")
        self.best_state: dict[str, torch.Tensor] | None = None
        for key, value in {**self.model.config.to_dict(), **dataclasses.asdict(run)}.items():
            log(f"{key}: {value}")
        log(f"activation: {self.model.activation}")
        log(f"device: {self.device}")
        self.cache = open_cache(
            self.model, n_images, run.cache_dir, run.cache_dtype, run.cache_budget_gb, log
        )

    def settings(self) -> dict[str, Any]:
        """What must not change between an interrupted and a resumed run."""
        run = dataclasses.asdict(self.run)
        return {**{k: run[k] for k in RESUME_FIXED}, "model": self.model.config.to_dict()}

    def start(self) -> tuple[int, int]:
        """``(epoch, batches done in it)`` to start from: ``(0, 0)``, or the saved state."""
        if not self.run.resume:
            return 0, 0
        state = load_state(self.state_path, self.model.head, self.optimizer, self.settings())
        self.best, self.best_state = state["best"], state["best_state"]
        self.log(f"resumed from {self.state_path}: epoch {state['epoch']}, batch {state['step']}")
        return state["epoch"], state["step"]

    def save_state(self, epoch: int, step: int) -> None:
        """Save the training state: ``step`` batches of ``epoch`` are done (rank 0 writes)."""
        if distributed.is_main():
            save_state(
                self.state_path,
                self.model.head,
                self.optimizer,
                epoch=epoch,
                step=step,
                best=self.best,
                best_state=self.best_state,
                settings=self.settings(),
            )

    def after_step(self, epoch: int, done: int, n_batches: int) -> None:
        """Save the state every ``save_every`` steps (epoch ends are saved by the loop)."""
        every = self.run.save_every
        if every > 0 and done % every == 0 and done < n_batches:
            self.save_state(epoch, done)

    def evaluate(self, samples: list[Sample], pixel: bool, desc: str) -> dict[str, Any]:
        return evaluate(
            self.model,
            samples,
            self.run.setting,
            pixel,
            2 * self.run.batch_size,
            self.workers,
            desc,
            self.cache,
        )

    def consider(self, score: float, meta: dict[str, Any], where: str) -> None:
        """Keep and save the current weights if ``score`` is at least the best so far."""
        if score >= self.best:
            self.best = score
            self.best_state = {
                k: v.detach().clone() for k, v in self.model.head.state_dict().items()
            }
            self.save_checkpoint({**meta, "selection_score": score})
            self.log(f"best epoch found: {where}")

    def save_checkpoint(self, meta: dict[str, Any]) -> None:
        """Write the checkpoint with the run settings (rank 0 writes)."""
        if distributed.is_main():
            save_checkpoint(self.ckpt, self.model, {**meta, "run": dataclasses.asdict(self.run)})

    def finish(self, test_samples: list[Sample], pixel: bool, select: Select) -> dict[str, Any]:
        """Restore the selected weights, evaluate on the target test split, log and return."""
        if distributed.is_main():
            self.state_path.unlink(missing_ok=True)  # the run is complete: nothing to resume
        if self.best_state is not None:
            self.model.head.load_state_dict(self.best_state)
        if not test_samples:
            self.log(f"checkpoint: {self.ckpt} (no {self.run.obj}_AD/test split to evaluate on)")
            return {}
        metrics = self.evaluate(test_samples, pixel, f"{self.run.obj} test")
        self.log.metrics(self.run.obj, metrics)
        self.log(f"checkpoint: {self.ckpt} (selected by {select})")
        if self.cache is not None:
            self.log(self.cache.hit_rate())
        if self.run.metrics_json and distributed.is_main():
            write_metrics_json(self.run.metrics_json, metrics, **_record_fields(self.run))
        return metrics

    def fit(
        self,
        loader: DataLoader,
        sampler: EpochBatchSampler | ShardedBatchSampler,
        before_step: Callable[[int, int], None] | None = None,
        after_epoch: Callable[[int], None] | None = None,
    ) -> None:
        """The epoch loop of both workflows, resumable at any batch.

        Args:
            loader: DataLoader over the training set, batches drawn by ``sampler``.
            sampler: epoch batch sampler (``set_epoch(epoch, skip)``).
            before_step: called with ``(epoch, step)`` before each step (zero-shot selection).
            after_epoch: called with ``epoch`` after each epoch (few-shot selection).
        """
        n_batches = len(sampler.batches())
        start_epoch, start_step = self.start()
        for epoch in range(start_epoch, self.run.epochs):
            skip = start_step if epoch == start_epoch else 0
            sampler.set_epoch(epoch, skip)
            self.log(f"epoch: {epoch}")
            losses, start = [], time.perf_counter()
            bar = self.epoch_bar(loader, epoch)
            for step, batch in enumerate(bar, start=skip):
                if before_step is not None:
                    before_step(epoch, step)
                losses.append(train_step(self.model, self.optimizer, batch, self.cache, self.head))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                self.after_step(epoch, step + 1, n_batches)
            self.log_epoch(losses, len(loader.dataset), time.perf_counter() - start)
            if after_epoch is not None:
                after_epoch(epoch)
            self.save_state(epoch + 1, 0)

    def log_epoch(self, losses: list[float], n_images: int, seconds: float) -> None:
        """The published ``Loss: <mean>`` line, with the speed and the cache hit rate."""
        cache = f"; {self.cache.hit_rate()}" if self.cache is not None else ""
        self.log(f"Loss: {np.mean(losses):.6f} ({n_images / seconds:.1f} img/s{cache})")

    def epoch_bar(self, loader: DataLoader, epoch: int) -> tqdm:
        return tqdm(
            loader,
            desc=f"epoch {epoch}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            disable=not distributed.is_main(),
        )

    def shard(self, sampler: EpochBatchSampler) -> EpochBatchSampler | ShardedBatchSampler:
        """Under torchrun, this rank's part of every global batch; else the sampler itself."""
        if not distributed.is_distributed():
            return sampler
        sampler.batch_size *= distributed.world_size()  # global batch = per-rank x world size
        return ShardedBatchSampler(sampler, distributed.rank(), distributed.world_size())


def _record_fields(run: RunConfig) -> dict[str, Any]:
    return {
        "dataset": run.obj,
        "setting": run.setting,
        "shot": run.shot if run.setting == "few" else 0,
    }


def _warn_target_test(log: RunLog) -> None:
    msg = (
        "--select target-test picks the checkpoint on the target test set, as the published "
        "protocol does; its test metrics are optimistic"
    )
    warnings.warn(msg, stacklevel=3)
    log(f"warning: {msg}")


def train_zero(model_cfg: ModelConfig, run: RunConfig) -> dict[str, Any]:
    """Zero-shot training on the other datasets; returns the target test metrics."""
    run = dataclasses.replace(run, setting="zero")
    select: Select = run.select or "source-val"
    if select not in ("last", "source-val", "target-test"):
        raise UserError(f"--select {select!r} must be last, source-val or target-test")
    log = RunLog(run.log_path)
    try:
        bad = BadInputs(run.on_bad_input, model_cfg.img_size)
        sources = [n for n in available_datasets(run.data_path) if n != run.obj]
        target_pixel = has_masks(run.data_path, run.obj)
        test_samples = bad.check(
            list_split(run.data_path, run.obj, "test", bad.missing_masks), target_pixel
        )
        if not sources:
            raise UserError(
                f"--data_path {run.data_path}: zero-shot training on {run.obj} needs other <Name>_AD datasets"
            )
        parts, val = [], []
        for name in sources:
            pixel = has_masks(run.data_path, name)
            samples = bad.check(list_split(run.data_path, name, "test", bad.missing_masks), pixel)
            if select == "source-val":
                samples, held = _held_out(samples, run.seed)
                val.append((name, held, pixel))
            parts.append(ImageDataset(samples, model_cfg.img_size, segmentation=pixel))
        n_images = sum(len(p) for p in parts) + sum(len(h) for _, h, _ in val) + len(test_samples)
        trainer = Trainer(model_cfg, run, log, n_images)
        bad.report(trainer.ckpt.parent, trainer.ckpt.stem, log)
        log(f"sources: {', '.join(f'{n} ({len(p)})' for n, p in zip(sources, parts, strict=True))}")
        starts = np.cumsum([0] + [len(p) for p in parts])
        groups = [range(int(a), int(b)) for a, b in itertools.pairwise(starts)]
        sampler = trainer.shard(HomogeneousBatchSampler(groups, run.batch_size, run.seed))
        loader = DataLoader(
            ConcatDataset(parts),
            batch_sampler=sampler,
            num_workers=trainer.workers,
            generator=_private_generator(run.seed),
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
    finally:
        log.close()


def train_few(model_cfg: ModelConfig, run: RunConfig) -> dict[str, Any]:
    """Few-shot training on K abnormal + K normal support images; returns the test metrics."""
    run = dataclasses.replace(run, setting="few")
    select: Select = run.select or "last"
    if select not in ("last", "target-test"):
        raise UserError(
            f"--select {select!r}: few-shot training supports last or target-test (no source data)"
        )
    log = RunLog(run.log_path)
    try:
        bad = BadInputs(run.on_bad_input, model_cfg.img_size)
        if run.normal_dir or run.abnormal_dir:
            if not (run.normal_dir and run.abnormal_dir):
                raise UserError("few-shot on your own data needs both --normal and --abnormal")
            abnormal, normal = samples_from_folders(run.normal_dir, run.abnormal_dir, run.masks_dir)
            pixel = run.masks_dir is not None
            run = dataclasses.replace(run, shot=len(abnormal))
            has_test = (Path(run.data_path) / f"{run.obj}_AD" / "test").is_dir()
            test_samples = (
                list_split(run.data_path, run.obj, "test", bad.missing_masks) if has_test else []
            )
        else:
            pixel = has_masks(run.data_path, run.obj)
            test_samples = list_split(run.data_path, run.obj, "test", bad.missing_masks)
            abnormal, normal = support_set(
                run.data_path, run.obj, run.shot, run.iterate, run.fewshot_seed_dir, run.seed
            )
        abnormal, normal = bad.check(abnormal, pixel), bad.check(normal, False)
        # the test split's masks belong to <obj>_AD, whatever the support folders hold
        test_pixel = bool(test_samples) and has_masks(run.data_path, run.obj)
        test_samples = bad.check(test_samples, test_pixel)
        if not abnormal or not normal:
            raise UserError("no usable support images are left after --on_bad_input skip")
        support = augmented_support(abnormal, normal, model_cfg.img_size, pixel)
        trainer = Trainer(model_cfg, run, log, len(support) + len(test_samples))
        bad.report(trainer.ckpt.parent, trainer.ckpt.stem, log)
        log(
            f"support: {len(abnormal)} abnormal + {len(normal)} normal -> {len(support)} augmented samples"
        )
        sampler = trainer.shard(ShuffledBatchSampler(len(support), run.batch_size, run.seed))
        loader = DataLoader(support, batch_sampler=sampler, generator=_private_generator(run.seed))
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
    finally:
        log.close()


def test(model_overrides: dict[str, Any], run: RunConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on the target's test split.

    Args:
        model_overrides: model flags given explicitly; the rest comes from the checkpoint.
        run: run settings (``ckpt_path`` required).
    """
    if not run.ckpt_path:
        raise UserError("--ckpt_path is required")
    metrics_json = Path(run.metrics_json) if run.metrics_json else None
    report_dir = Path(run.report_dir) if run.report_dir else None
    _refuse_overwrite(run, metrics_json, report_dir / "metrics.json" if report_dir else None)
    stored, _, _ = read_checkpoint(run.ckpt_path)
    config = dataclasses.replace(stored, **model_overrides)
    log = RunLog(run.log_path)
    try:
        device = resolve_device(run.device)
        pixel = has_masks(run.data_path, run.obj)
        bad = BadInputs(run.on_bad_input, config.img_size)
        samples = bad.check(list_split(run.data_path, run.obj, "test", bad.missing_masks), pixel)
        folder = report_dir or Path(run.metrics_json or run.log_path or ".").parent
        bad.report(folder, f"test_{run.obj}", log)
        model = IQEClip.build(config, device)
        load_checkpoint(model, run.ckpt_path)
        for key, value in {**model.config.to_dict(), **dataclasses.asdict(run)}.items():
            log(f"{key}: {value}")
        cache = open_cache(
            model, len(samples), run.cache_dir, run.cache_dtype, run.cache_budget_gb, log
        )
        workers = _workers(run, device)
        scored: dict[str, tuple[np.ndarray, np.ndarray]] = {}
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
        )
        log.metrics(run.obj, metrics)
        if cache is not None:
            log(cache.hit_rate())
        if metrics_json is not None and distributed.is_main():
            write_metrics_json(metrics_json, metrics, **_record_fields(run))
        if run.report_dir:
            from iqeclip.report.run import write_test_report

            html = write_test_report(run.report_dir, model, samples, *scored[""], metrics, run)
            log(f"report: {html}")
        return metrics
    finally:
        log.close()
