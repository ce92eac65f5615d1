"""``iqeclip demo``: the paper's main job end to end, offline, on the synthetic benchmark.

Builds the synthetic benchmark in a cache folder, trains zero-shot (leave ``--obj`` out) and
4-shot for the same target, adds to the zero-shot checkpoint a memory bank of the target's normal
``valid`` images (``iqeclip bank``: no training; an addition to the paper, not part of it), tests
all three, prints the result table and writes a report (metrics table and a figure of anomaly
maps over test images). With the default random-init ``iqe-tiny`` backbone the numbers show
that the pipeline runs, not what pretrained CLIP achieves; ``--model_name ViT-L-14-336
--pretrain FILE`` runs the same demo with real weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from iqeclip.config import DEMO_MODEL, DemoConfig, ModelConfig, RunConfig, cache_home
from iqeclip.data.datasets import ImageDataset
from iqeclip.data.layout import list_split, split_folders
from iqeclip.engine.evaluate import KeptMaps, predict_samples
from iqeclip.engine.workflows import train_few, train_zero
from iqeclip.inference.bank import build_bank
from iqeclip.inference.test import test
from iqeclip.model.detector import IQEClip
from iqeclip.report.content import metric_name
from iqeclip.report.heatmaps import draw_contour, grid, overlay
from iqeclip.report.run import RANDOM_NOTE, write_test_report
from iqeclip.runtime.device import resolve_device
from iqeclip.runtime.files import atomic_write, atomic_write_text

COLUMNS = ("image_auroc", "pixel_auroc", "image_ap", "pixel_ap", "image_f1_max", "pixel_aupro")
REAL_WEIGHTS = "iqeclip demo --model_name ViT-L-14-336 --pretrain openai"
ROWS_EXPLAINED = {
    "zero": "zero-shot never sees {obj}: with a random backbone its scores rank {obj}'s images "
    "close to chance, so a value near 0.5, on either side (below 0.5: ranked the wrong way "
    "round), is what to expect, and a Pixel AUPRO near 0 (its maps cover almost none of a "
    "lesion at the false-positive rates AUPRO counts)",
    "zero+bank": "zero+bank is the zero-shot checkpoint with a memory of the patches of {n} "
    "normal {obj} images (no training): each test patch also scores by its distance to the "
    "nearest normal patch, fused half and half with the zero-shot map; even a random backbone's "
    "patches can differ where a lesion is, so this row may move away from chance, or not",
    "few": "{shot}-shot trains the head on {shot} normal and {shot} abnormal {obj} images; a "
    "random backbone lets it fit them only a little, so its values may also stay near chance, "
    "on either side",
}
"""What each row of the demo's table means with a random-init backbone (the console and
report.md print it next to the numbers)."""


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of the metrics of each run."""
    head = f"{'setting':<9} {'shot':>4} " + " ".join(f"{metric_name(c)[0]:>12}" for c in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = " ".join(
            f"{'-' if r[c] is None or r[c] != r[c] else f'{r[c]:.4f}':>12}" for c in COLUMNS
        )
        lines.append(f"{r['setting']:<9} {r['shot']:>4} {cells}")
    return "\n".join(lines)


def _figure(models: dict[str, IQEClip], data: tuple[Path, str, str | None], path: Path) -> None:
    """Two normal and two abnormal test images with the maps of each model (ground truth in
    green); ``data``: the data folder, the dataset and its layout."""
    samples = list_split(*data[:2], "test", layout=data[2])
    picks = [s for s in samples if s.label == 0][:2] + [s for s in samples if s.label == 1][:2]
    columns, titles = [], ["input"]
    size = next(iter(models.values())).config.img_size
    for name, model in models.items():
        kept = KeptMaps(len(picks), size)
        predict_samples(model, picks, model_setting(name), len(picks), desc=name, sink=kept)
        maps = kept.maps
        lo, hi = float(maps.min()), float(maps.max())
        columns.append((maps - lo) / max(hi - lo, 1e-12))
        titles.append(f"{name} ({lo:.2f}-{hi:.2f})")
    data = ImageDataset(picks, size)
    rows = []
    for i in range(len(picks)):
        image, mask = data[i][0].permute(1, 2, 0).numpy(), data[i][1].numpy()
        rows.append([image] + [draw_contour(overlay(image, col[i]), mask) for col in columns])
    picture = grid(
        rows,
        labels=[f"{'abnormal' if s.label else 'normal'} {s.image.name}" for s in picks],
        titles=titles,
        bar=[(0.0, "column min"), (1.0, "column max")],
        bar_title="map",
    )
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The trainings' lines go to demo.log only, unless -v asked for everything."""
    logger = logging.getLogger("iqeclip")
    level = logger.level
    if level == logging.INFO:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def model_setting(name: str) -> str:
    return "zero" if name.startswith("zero") else "few"


def _zero_bank(
    model_overrides: dict[str, Any], args: DemoConfig, base: RunConfig, data_path: Path
) -> tuple[RunConfig, dict[str, Any], int]:
    """A bank of the target's normal ``valid`` images on the zero-shot checkpoint (the defaults
    of ``iqeclip bank``), tested as the zero-shot row is: its run, metrics and image count."""
    normal = split_folders(data_path, args.obj, "valid", args.layout).normal
    ckpt = Path(base.save_dir) / f"{args.obj}_bank.pth"
    zero_ckpt = Path(base.save_dir) / f"{args.obj}.pth"
    _, record = build_bank(
        zero_ckpt,
        ckpt,
        normal=normal,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=True,
        seed=args.seed,
    )
    n = len(record["images"])
    print(f"zero+bank: a memory of {n} normal {args.obj} images on the zero-shot checkpoint")
    run = dataclasses.replace(
        base,
        setting="zero",
        ckpt_path=str(ckpt),
        metrics_json=str(Path(args.out) / "zero_bank.json"),
        report_dir=str(Path(args.out) / "zero+bank"),
    )
    return run, test(model_overrides, run), n


def run_demo(model_overrides: dict[str, Any], args: DemoConfig) -> dict[str, dict[str, Any]]:
    """Run the demo; returns the metrics of its three runs (zero, zero+bank, few).

    Args:
        model_overrides: model fields asked for (the rest: iqe-tiny, random init, 128 px).
        args: the demo's own options.
    """
    from iqeclip.data.synth import write_benchmark

    tiny = model_overrides.get("model_name", "iqe-tiny") == "iqe-tiny"
    model_cfg = ModelConfig(**{**(DEMO_MODEL if tiny else {}), **model_overrides})
    out = Path(args.out)
    data_path = (
        Path(args.data_path) if args.data_path else cache_home() / "synth-seed0-size12-128px"
    )
    if args.data_path is None and not (data_path / f"{args.obj}_AD").is_dir():
        print(f"writing the synthetic benchmark to {data_path}")
        write_benchmark(data_path, size=12, seed=0, image_size=128, overwrite=True)
    base = RunConfig(
        obj=args.obj,
        data_path=str(data_path),
        layout=args.layout,
        batch_size=args.batch_size,
        seed=args.seed,
        learning_rate=args.learning_rate,
        device=args.device,
        save_dir=str(out / "ckpt"),
        log_path=str(out / "demo.log"),
        overwrite=True,
    )
    # The synthetic sources hold too few images for a meaningful held-out selection: keep the
    # last zero-shot epoch (the report says so). Each test is a normal run folder with its report.
    zero_run = dataclasses.replace(
        base,
        setting="zero",
        epochs=args.zero_epochs,
        select="last",
        metrics_json=str(out / "zero.json"),
        report_dir=str(out / "zero"),
    )
    few_run = dataclasses.replace(
        base,
        setting="few",
        shot=args.shot,
        epochs=args.few_epochs,
        metrics_json=str(out / f"few_{args.shot}.json"),
        report_dir=str(out / f"few-{args.shot}"),
    )
    with _quiet():
        print(
            f"zero-shot: {args.zero_epochs} epochs on the other datasets, then the {args.obj} test"
        )
        results = {"zero": train_zero(model_cfg, zero_run, write_test_report)}
        bank_run, results["zero+bank"], n_normal = _zero_bank(
            model_overrides, args, base, data_path
        )
        print(
            f"{args.shot}-shot: {args.few_epochs} epochs on {args.shot} + {args.shot} {args.obj} images, then its test"
        )
        results[f"few-{args.shot}"] = train_few(model_cfg, few_run, write_test_report)
    runs = (zero_run, bank_run, few_run)
    reports = [Path(run.report_dir) / "report.html" for run in runs]
    _summary(model_cfg, model_overrides, args, (data_path, n_normal), results, reports)
    return results


def _summary(
    model_cfg: ModelConfig,
    model_overrides: dict[str, Any],
    args: DemoConfig,
    data: tuple[Path, int],
    results: dict[str, dict[str, Any]],
    reports: list[Path],
) -> None:
    """The result table, the notes, the maps figure and ``report.md`` of the demo; ``data``: the
    data folder and the number of normal images in the bank."""
    out = Path(args.out)
    data_path, n_normal = data
    rows = [
        {"setting": "zero", "shot": 0, **results["zero"]},
        {"setting": "zero+bank", "shot": 0, **results["zero+bank"]},
        {"setting": "few", "shot": args.shot, **results[f"few-{args.shot}"]},
    ]
    table = format_table(rows)
    random = model_cfg.pretrain == "none"
    notes = [RANDOM_NOTE] if random else [f"Backbone weights: {model_cfg.pretrain}."]
    if random:
        notes += [
            f"{setting}: " + text.format(obj=args.obj, shot=args.shot, n=n_normal)
            for setting, text in ROWS_EXPLAINED.items()
        ]
        notes.append(f"The same demo with pretrained CLIP: {REAL_WEIGHTS} (or --pretrain FILE)")
    device = resolve_device(args.device)
    models = {}
    for name, ckpt in (
        ("zero-shot", out / "ckpt" / f"{args.obj}.pth"),
        ("zero+bank", out / "ckpt" / f"{args.obj}_bank.pth"),
        (f"{args.shot}-shot", out / "ckpt" / f"{args.obj}_{args.shot}.pth"),
    ):
        models[name] = IQEClip.from_checkpoint(ckpt, device, **model_overrides)
    _figure(models, (data_path, args.obj, args.layout), out / "maps.png")
    links = "\n".join(f"- [{path.parent.name}]({path.relative_to(out)})" for path in reports)
    definitions = "\n".join(f"- **{metric_name(c)[0]}**: {metric_name(c)[1]}" for c in COLUMNS)
    report = (
        f"# iqeclip demo: {args.obj}\n\n"
        + "\n\n".join(notes)
        + f"\n\n```\n{table}\n```\n\n{definitions}\n\n"
        f"Zero-shot: trained on the other five datasets for {args.zero_epochs} epochs, last epoch "
        f"kept; zero+bank: that checkpoint with a memory bank of the {n_normal} normal "
        f"{args.obj} valid images (iqeclip bank, default size and weight; no training; an "
        f"addition to the paper, not part of it); {args.shot}-shot: {args.few_epochs} epochs on "
        f"the augmented support set; learning rate {args.learning_rate}. Checkpoints, logs and "
        f"metrics JSON are in this folder; each test's report (curves, histograms, examples):\n\n{links}\n\n"
        f"![anomaly maps: input, zero-shot, zero+bank, {args.shot}-shot; ground truth in green]"
        "(maps.png)\n"
    )
    atomic_write_text(out / "report.md", report)
    print()
    print(table)
    print()
    for note in notes:
        print(note)
    print(f"reports: {', '.join(map(str, reports))} (iqeclip report {out} rebuilds them)")
    print(f"summary: {out / 'report.md'} (figure: {out / 'maps.png'})")
