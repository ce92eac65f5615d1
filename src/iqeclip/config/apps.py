"""The configurations of the apps: ``synth``, ``report``, ``demo``, ``reproduce``, ``benchmark``,
``export`` and ``serve``."""

from __future__ import annotations

from dataclasses import dataclass

from iqeclip.config.option import Checked, Option
from iqeclip.config.shared import (
    BACKEND,
    BATCH_SIZE,
    CKPT_PATH,
    DATA_PATH,
    DEVICE,
    LEARNING_RATE,
    MODEL_FILE,
    OBJ,
    OUT,
    OVERWRITE,
    SEED,
    SHOT,
    WORKERS,
)

__all__ = [
    "BenchmarkConfig",
    "DemoConfig",
    "ExportConfig",
    "ReportConfig",
    "ReproduceConfig",
    "ServeConfig",
    "SynthConfig",
]


DEMO_MODEL = {"model_name": "iqe-tiny", "pretrain": "none", "img_size": 128}
"""The model ``iqeclip demo`` runs when no --model_name is given (another model: the paper's)."""
BENCH_MODEL = {"model_name": "ViT-B-16", "pretrain": "none", "img_size": 240}
"""The model ``iqeclip benchmark`` measures unless told otherwise."""


@dataclass
class SynthConfig(Checked):
    """``iqeclip synth``: write the synthetic benchmark."""

    out: str | None = OUT(None)
    size: int = Option("test images per class and dataset", minimum=1)(12)
    seed: int = SEED(0)
    image_size: int = Option("image side in pixels")(128)
    overwrite: bool = OVERWRITE(False, help="rewrite the datasets in a non-empty folder")


@dataclass
class ReportConfig(Checked):
    """``iqeclip report``: rebuild the report of a test run folder."""

    run_dir: list[str] = Option(
        "folder written by test-* --report (or a folder of such, as iqeclip demo writes)",
        positional=True,
        nargs="*",
    )([])
    top_k: int = Option("highest- and lowest-scoring examples to show", minimum=0)(8)


@dataclass
class DemoConfig(Checked):
    """``iqeclip demo``: the paper's main job on the synthetic benchmark."""

    obj: str = OBJ("Brain")
    out: str = OUT("runs/demo", help="results folder, replaced on rerun")
    data_path: str | None = DATA_PATH(
        None, help="benchmark folder (None: the synthetic benchmark in ~/.cache/iqeclip)"
    )
    zero_epochs: int = Option("zero-shot epochs", minimum=1)(5)
    few_epochs: int = Option("few-shot epochs", minimum=1)(15)
    learning_rate: float = LEARNING_RATE(
        1e-3,
        help="learning rate (a random-init backbone learns too slowly at the paper's 1e-4 for a "
        "demo of minutes)",
    )
    shot: int = SHOT(4)
    batch_size: int = BATCH_SIZE(16)
    seed: int = SEED(42)
    device: str = DEVICE("auto")


@dataclass
class ReproduceConfig(Checked):
    """``iqeclip reproduce``: the paper's result grid, one resumable cell at a time."""

    out: str | None = OUT(None, help="the grid's folder: one sub-folder per cell, results, tables")
    targets: list[str] = Option("target datasets (columns of the table)", nargs="+")(
        ["Histopathology", "Chest", "Retina_OCT2017", "Brain", "Liver", "Retina_RESC"]
    )
    settings: list[str] = Option("zero and/or shot counts K (rows of the table)", nargs="+")(
        ["zero", "2", "4", "8", "16"]
    )
    draws: int = Option(
        "draws per setting: few-shot draw 0 is the K-shot.txt list, the others seeded random "
        "support sets; zero-shot draws vary the training seed",
        minimum=1,
    )(1)
    jobs: int = Option(
        "cells run at once as separate processes (one GPU each where several are visible; on "
        "the CPU the threads are split)",
        minimum=1,
    )(1)
    bootstrap: int = Option("bootstrap resamples for each cell's image-AUROC interval", minimum=0)(
        1000
    )
    references: str | None = Option(
        "YAML file of reference results (None: the bundled MVFA-AD and SGGP numbers)"
    )(None)
    table_only: bool = Option("rebuild results.csv and the tables from the finished cells")(False)


@dataclass
class BenchmarkConfig(Checked):
    """``iqeclip benchmark``: speed as ratios to the bare backbone forward."""

    batch_size: int = BATCH_SIZE(8)
    n_images: int = Option(
        "images per measured quantity; rounds = n_images / batch_size", minimum=1
    )(32)
    device: str = DEVICE("auto")
    seed: int = SEED(0)
    workers: int = WORKERS(2, help="predict --workers of the pipeline figure")
    backend: str = BACKEND(
        "torch",
        help="onnx: also export the model and time onnxruntime beside the PyTorch path, with "
        "the same number of threads (pip install 'iqeclip[export]')",
    )


@dataclass
class ExportConfig(Checked):
    """``iqeclip export``: the whole scoring path of a checkpoint as one ONNX graph."""

    ckpt_path: str | None = CKPT_PATH(None)
    format: str = Option("export format", choices=("onnx",))("onnx")
    out: str | None = Option("the model file to write (e.g. model.onnx)")(None)
    overwrite: bool = OVERWRITE(False, help="replace an existing --out file")


@dataclass
class ServeConfig(Checked):
    """``iqeclip serve``: a local web viewer and JSON API over predict."""

    ckpt_path: str | None = CKPT_PATH(None)
    host: str = Option("address to listen on (127.0.0.1: this machine only)")("127.0.0.1")
    port: int = Option("TCP port", minimum=1, maximum=65535)(8000)
    max_upload_mb: float = Option("largest upload accepted, in MB", above=0)(200.0)
    batch_size: int = BATCH_SIZE(8, help="slices per forward pass")
    device: str = DEVICE("auto")
    backend: str = BACKEND("torch")
    model: str | None = MODEL_FILE(None)
