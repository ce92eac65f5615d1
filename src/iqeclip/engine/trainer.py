"""The training machinery both workflows share: one epoch loop, selection, saving, logging.

:class:`Trainer` owns the model, the optimiser (Adam (0.5, 0.999); 0.01 for the temperature, as
published), the feature cache, the resumable training state and the checkpoint; :meth:`Trainer.fit`
is the one epoch loop of zero- and few-shot training and :meth:`Trainer.finish` ends a run with
its final test (:func:`~iqeclip.engine.testing.run_test`). :class:`BadInputs` applies
``--on_bad_input`` before any work.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from iqeclip.config import ModelConfig, RunConfig, resume_fixed
from iqeclip.data.datasets import EpochBatchSampler, ShardedBatchSampler
from iqeclip.data.sample import Sample
from iqeclip.data.validate import Skipped, validate_samples, write_skipped
from iqeclip.engine.cache import FeatureCache, open_cache
from iqeclip.engine.evaluate import evaluate, frozen_features
from iqeclip.engine.resume import load_state, save_state, state_path
from iqeclip.engine.runlog import RunLog
from iqeclip.engine.testing import ReportWriter, require_writer, run_test
from iqeclip.errors import UserError, param
from iqeclip.model.checkpoint import save_checkpoint
from iqeclip.model.detector import IQEClip
from iqeclip.model.losses import iqe_loss
from iqeclip.runtime import distributed
from iqeclip.runtime.device import loader_workers, resolve_device, seed_everything
from iqeclip.runtime.files import check_writable

Select = Literal["last", "source-val", "target-test"]
TEMP_LR = 0.01  # learning rate of the text-branch temperature, as published
BETAS = (0.5, 0.999)


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


def make_optimizer(model: IQEClip, learning_rate: float) -> torch.optim.Adam:
    """Adam (0.5, 0.999): ``learning_rate`` for the head, 0.01 for the temperature."""
    temp = model.head.class_tokens.prompt_temp
    rest = [p for p in model.head.parameters() if p is not temp]
    return torch.optim.Adam(
        [{"params": rest, "lr": learning_rate}, {"params": [temp], "lr": TEMP_LR}], betas=BETAS
    )


def make_scaler(model: IQEClip) -> torch.amp.GradScaler:
    """The loss scaler of ``--precision fp16`` training (small gradients would underflow in
    fp16); a disabled one, which changes nothing, otherwise."""
    return torch.amp.GradScaler(model.device.type, enabled=model.config.precision == "fp16")


def train_step(
    model: IQEClip,
    optimizer: torch.optim.Optimizer,
    batch: Sequence[torch.Tensor],
    cache: FeatureCache | None = None,
    head: torch.nn.Module | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One optimisation step on a CPU batch ``(images, masks, labels, segmentation flags)``.

    ``head`` is the module to run the trainable half through (the DistributedDataParallel
    wrapper of ``model.head`` under torchrun); default ``model.head``. The head runs under
    :meth:`~iqeclip.model.detector.IQEClip.autocast`, the loss in fp32, and with ``--precision
    fp16`` the loss is scaled by ``scaler`` (:func:`make_scaler`).
    """
    device = next(model.head.parameters()).device
    images, masks, labels, seg = batch
    patch, glob = frozen_features(model, images, device, cache)
    with model.autocast():
        logits = (head or model.head)(patch, glob, model.backbone.text)
    loss = iqe_loss(logits.float(), masks.to(device), labels.to(device), segmentation=bool(seg[0]))
    optimizer.zero_grad(set_to_none=True)
    if scaler is None or not scaler.is_enabled():
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return float(loss.detach())


def private_generator(seed: int) -> torch.Generator:
    """A generator of the DataLoader's own: creating an epoch's iterator then draws from it, not
    from the global RNG that dropout uses, so a run resumed mid-epoch sees the same random stream."""
    return torch.Generator().manual_seed(seed)


def checkpoint_path(run: RunConfig) -> Path:
    name = f"{run.obj}.pth" if run.setting == "zero" else f"{run.obj}_{run.shot}.pth"
    return Path(run.save_dir).expanduser() / name


def sample_key(sample: Sample) -> str:
    """A sample's identity across commands: its resolved path, and ``#<slice>`` for a slice."""
    path = str(Path(sample.image).resolve())
    return path if sample.index is None else f"{path}#{sample.index}"


def check_outputs(run: RunConfig, training: bool) -> None:
    """Every location the run will write, checked before any work (one line naming its
    parameter)."""
    if training:
        check_writable(param("save_dir"), run.save_dir, folder=True)
    check_writable(param("log_path"), run.log_path)
    check_writable(param("metrics_json"), run.metrics_json)
    check_writable(param("report_dir"), run.report_dir, folder=True)


def refuse_overwrite(run: RunConfig, *paths: Path | None) -> None:
    for path in paths:
        if path is not None and path.exists() and not run.overwrite:
            raise UserError(f"{path} exists; pass {param('overwrite')} to replace it")


class Trainer:
    """Shared machinery of the two training workflows: model, optimiser, selection, saving."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        run: RunConfig,
        log: RunLog,
        n_images: int,
        report: ReportWriter | None = None,
    ) -> None:
        require_writer(run, report)
        self.run = run
        self.log = log
        self.report = report  # writes the final test's run folder (--report)
        self.device = resolve_device(run.device)
        self.workers = loader_workers(run.workers, self.device)
        self.ckpt = checkpoint_path(run)
        self.support: list[str] = []  # few-shot: sample_key of each support image
        self.support_abnormal = 0  # ... of which the first are abnormal
        self.state_path = state_path(self.ckpt)
        if not run.resume:
            report = Path(run.report_dir) / "metrics.json" if run.report_dir else None
            metrics = Path(run.metrics_json) if run.metrics_json else None
            refuse_overwrite(run, self.ckpt, metrics, report)
        seed_everything(run.seed)
        self.model = IQEClip.build(model_cfg, self.device)
        self.optimizer = make_optimizer(self.model, run.learning_rate)
        self.scaler = make_scaler(self.model)
        self.head: torch.nn.Module = self.model.head
        if distributed.is_distributed():
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.head = DistributedDataParallel(self.model.head, device_ids=ids)
        self.best = -float("inf")
        self.best_state: dict[str, torch.Tensor] | None = None
        for key, value in {**self.model.config.to_dict(), **dataclasses.asdict(run)}.items():
            log.detail(f"{key}: {value}")
        log(f"activation: {self.model.activation}")
        log(f"device: {self.device}")
        self.cache = open_cache(
            self.model, n_images, run.cache_dir, run.cache_dtype, run.cache_budget_gb, log
        )

    def settings(self) -> dict[str, Any]:
        """What must not change between an interrupted and a resumed run."""
        run = dataclasses.asdict(self.run)
        return {k: run[k] for k in resume_fixed(self.run)} | {"model": self.model.config.to_dict()}

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
        """Write the checkpoint with the run settings and the few-shot support (rank 0 writes)."""
        if distributed.is_main():
            run = dataclasses.asdict(self.run)
            support = {"support": self.support, "support_abnormal": self.support_abnormal}
            save_checkpoint(self.ckpt, self.model, {**meta, "run": run, **support})

    def finish(self, test_samples: list[Sample], pixel: bool, select: Select) -> dict[str, Any]:
        """Restore the selected weights, run the final test on the target test split, return
        its metrics.

        The training state is removed last, once the metrics and the report are written: a run
        killed during its final test resumes into the test, not into training from scratch.
        """
        if self.best_state is not None:
            self.model.head.load_state_dict(self.best_state)
        metrics: dict[str, Any] = {}
        if not test_samples:
            self.log(f"checkpoint: {self.ckpt} (no {self.run.obj}_AD/test split to evaluate on)")
        else:
            metrics = run_test(
                self.model,
                test_samples,
                pixel,
                dataclasses.replace(self.run, ckpt_path=str(self.ckpt)),
                batch_size=2 * self.run.batch_size,
                workers=self.workers,
                cache=self.cache,
                log=self.log,
                selection=select,
                report=self.report,
                log_cache=False,
            ).metrics
            self.log(f"checkpoint: {self.ckpt} (selected by {select})")
            if self.cache is not None:
                self.log(self.cache.hit_rate())
        if distributed.is_main():
            self.state_path.unlink(missing_ok=True)  # the run is complete
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
                losses.append(
                    train_step(
                        self.model, self.optimizer, batch, self.cache, self.head, self.scaler
                    )
                )
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                self.after_step(epoch, step + 1, n_batches)
            self.log_epoch(losses, len(loader.dataset), time.perf_counter() - start)
            if after_epoch is not None:
                after_epoch(epoch)
            self.save_state(epoch + 1, 0)

    def log_epoch(self, losses: list[float], n_images: int, seconds: float) -> None:
        """The published ``Loss: <mean>`` line, with the speed and the cache hit rate."""
        cache = ""
        if self.cache is not None:
            self.cache.flush()
            cache = f"; {self.cache.hit_rate()}"
        self.log(f"Loss: {np.mean(losses):.6f} ({n_images / seconds:.1f} img/s{cache})")

    def epoch_bar(self, loader: DataLoader, epoch: int) -> tqdm:
        return tqdm(
            loader,
            desc=f"epoch {epoch}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            disable=distributed.no_progress_bar(),
        )

    def shard(self, sampler: EpochBatchSampler) -> EpochBatchSampler | ShardedBatchSampler:
        """Under torchrun, this rank's part of every global batch; else the sampler itself."""
        if not distributed.is_distributed():
            return sampler
        sampler.batch_size *= distributed.world_size()  # global batch = per-rank x world size
        return ShardedBatchSampler(sampler, distributed.rank(), distributed.world_size())
