"""The configurations of the apps: ``synth``, ``report``, ``demo``, ``reproduce``, ``benchmark``,
``export`` and ``serve``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from iqeclip.config.option import Checked, Option
from iqeclip.config.shared import (
    BACKEND,
    BATCH_SIZE,
    CKPT_PATH,
    DATA_PATH,
    DEVICE,
    LAYOUT,
    LEARNING_RATE,
    MAX_MEGAPIXELS,
    MAX_SLICES,
    MAX_TOTAL_MEGAPIXELS,
    MODEL_FILE,
    OBJ,
    OUT,
    OVERWRITE,
    SEED,
    SETTING,
    SHOT,
    WORKERS,
)
from iqeclip.errors import UserError, param

__all__ = [
    "IMPORT_MODEL",
    "IMPORT_READ",
    "BankConfig",
    "BenchmarkConfig",
    "DemoConfig",
    "ExportCheckpointConfig",
    "ExportConfig",
    "ImportCheckpointConfig",
    "ReportConfig",
    "ReproduceConfig",
    "ServeConfig",
    "SynthConfig",
]


DEMO_MODEL = {"model_name": "iqe-tiny", "pretrain": "none", "img_size": 128}
"""The model ``iqeclip demo`` runs when no --model_name is given (another model: the paper's)."""
IMPORT_MODEL = {"model_name": "ViT-L-14-336", "img_size": 240, "use_global": False}
"""What ``iqeclip import-checkpoint`` assumes where a published file cannot tell, as the IQE-CLIP
README's commands ran: ViT-L-14-336 at 240 px, and ``use_global`` off, because every README
command passes ``--use_global``, which the published scripts declared ``store_false``: the flag
turned the conditioning off. The other model flags keep iqeclip's defaults, the paper's."""
IMPORT_READ = ("prompt_len", "deep_prompt_len", "total_d_layer_len", "iqm_layers")
"""The model fields ``import-checkpoint`` reads off a published file's tensors."""
BENCH_MODEL = {"model_name": "ViT-B-16", "pretrain": "none", "img_size": 240}
"""The model ``iqeclip benchmark`` measures unless told otherwise."""
MAX_UPLOAD_MB = 10_000
"""The largest ``iqeclip serve --max_upload_mb``: 10 GB, above any one study a viewer is sent."""
HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::(\d{1,5}))?", re.IGNORECASE)
"""A host name or address (IPv6 in brackets) with an optional port, as an HTTP ``Host`` header
holds it: ``viewer.lan``, ``10.0.0.5:8000``, ``[fd00::5]``."""


def parse_hosts(tokens: Any) -> list[str]:
    """``--allowed_hosts``: ``a,b``, ``a b`` or a YAML list of :data:`HOST` values."""
    items = tokens if isinstance(tokens, (list, tuple)) else [tokens]
    hosts = [h for item in items if item is not None for h in re.split(r"[,\s]+", str(item)) if h]
    for host in hosts:
        if not HOST.fullmatch(host):
            raise UserError(
                f"{param('allowed_hosts')} expects host names or addresses such as viewer.lan or "
                f"10.0.0.5:8000, got {host!r}"
            )
    return hosts


@dataclass
class SynthConfig(Checked):
    """``iqeclip synth``: write the synthetic benchmark."""

    out: str | None = OUT(None)
    size: int = Option("test images per class and dataset", minimum=1)(12)
    seed: int = SEED(0)
    image_size: int = Option("image side in pixels")(128)
    overwrite: bool = OVERWRITE(False, help="rewrite the datasets in a non-empty folder")
    layout: str = LAYOUT("mvfa", help="folder layout to write: mvfa (<Name>_AD) or bmad (<Name>)")


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
    layout: str | None = LAYOUT(None)
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
    settings: list[str] = Option(
        "zero, shot counts K and/or zero+bank-K (the zero-shot checkpoint with a memory bank of K "
        "normal valid images; rows of the table)",
        nargs="+",
    )(["zero", "2", "4", "8", "16"])
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
class BankConfig(Checked):
    """``iqeclip bank``: a memory of a site's normal images on a zero-shot checkpoint."""

    ckpt_path: str | None = CKPT_PATH(None, help="the zero-shot checkpoint")
    normal: str | None = Option("folder of normal images (walked as predict walks it)")(None)
    manifest: str | None = Option("CSV manifest: its normal rows of the train split")(None)
    out: str | None = OUT(
        None, help="the checkpoint with the bank to write (e.g. ckpt/Brain_bank.pth)"
    )
    bank_size: int = Option(
        "memory entries kept per tapped level (greedy coreset of the patches)", minimum=1
    )(2048)
    bank_weight: float = Option(
        "the bank's share of the fused map and score: (1 - w) * zero-shot + w * bank",
        minimum=0,
        maximum=1,
    )(0.5)
    batch_size: int = BATCH_SIZE(8, help="images per forward pass")
    device: str = DEVICE("auto")
    seed: int = SEED(0, help="the coreset's first entry")
    overwrite: bool = OVERWRITE(False, help="replace an existing --out file")


@dataclass
class ImportCheckpointConfig(Checked):
    """``iqeclip import-checkpoint``: a checkpoint of the published IQE-CLIP code as an iqeclip
    checkpoint."""

    source: str = Option(
        "the published checkpoint (the .pth its train_zero.py / train_few.py saved)",
        positional=True,
    )("")
    out: str | None = OUT(None, help="the iqeclip checkpoint to write (e.g. ckpt/Brain_4.pth)")
    obj: str = OBJ("custom", help="the dataset it was trained for (recorded in the checkpoint)")
    setting: str | None = SETTING(
        None, help="what it was trained as: zero or few (None: few with --shot, else zero)"
    )
    shot: int | None = SHOT(None, help="K of a few-shot checkpoint (the K of <obj>_<K>.pth)")
    overwrite: bool = OVERWRITE(False, help="replace an existing --out file")


@dataclass
class ExportCheckpointConfig(Checked):
    """``iqeclip export-checkpoint``: an iqeclip checkpoint in the published code's layout."""

    ckpt_path: str | None = CKPT_PATH(None)
    format: str = Option("checkpoint layout", choices=("published",))("published")
    out: str | None = Option("the .pth to write, for the published test_*.py scripts")(None)
    text_block: str | None = Option(
        "the name of the IQM's text cross-attention in the published layout (None: the name "
        "the imported file had, else crossattention_text)"
    )(None)
    overwrite: bool = OVERWRITE(False, help="replace an existing --out file")


@dataclass
class ServeConfig(Checked):
    """``iqeclip serve``: a local web viewer and JSON API over predict."""

    ckpt_path: str | None = CKPT_PATH(None)
    host: str = Option("address to listen on (127.0.0.1: this machine only)")("127.0.0.1")
    allowed_hosts: list[str] = Option(
        "other names the server answers to, comma-separated (host or host:port, as the Host "
        "header holds them: a name in DNS, a proxy's); the address it is reached on, and on "
        "loopback localhost, are always allowed",
        nargs="+",
        parse=parse_hosts,
    )([])
    port: int = Option("TCP port", minimum=1, maximum=65535)(8000)
    max_upload_mb: float = Option(
        "largest upload accepted, in MB", minimum=0, above=True, maximum=MAX_UPLOAD_MB
    )(200.0)
    batch_size: int = BATCH_SIZE(8, help="slices per forward pass")
    device: str = DEVICE("auto")
    backend: str = BACKEND("torch")
    model: str | None = MODEL_FILE(None)
    header_timeout_s: float = Option(
        "seconds a client has to send a request's line and headers, from its connection or the "
        "first byte of its next request; later: 408 and the connection closed",
        minimum=0,
        above=True,
    )(10.0)
    body_timeout_s: float = Option(
        "seconds a client has to send a request's body once its headers are in (a slow link "
        "uploading large scans needs more); later: 408 and the connection closed",
        minimum=0,
        above=True,
    )(60.0)
    max_connections: int = Option(
        "connections served at once; a request on a further one is answered 503", minimum=1
    )(100)
    max_megapixels: float = MAX_MEGAPIXELS(50.0)
    max_slices: int = MAX_SLICES(
        2000, help=MAX_SLICES.help + "; also the slices of all inputs of one upload together"
    )
    max_total_megapixels: float = MAX_TOTAL_MEGAPIXELS(
        500.0, help=MAX_TOTAL_MEGAPIXELS.help + "; also of all inputs of one upload together"
    )
    max_zip_members: int = Option("most files a zip upload may hold", minimum=1)(2000)
    max_unpacked_mb: float = Option(
        "most bytes a zip upload may unpack to, in MB", minimum=0, above=True
    )(1000.0)
    max_megapixels_at_once: float = Option(
        "pixels of the uploads being read and scored at once, in megapixels (from their "
        "headers); the others wait in turn, and an upload larger than this runs alone",
        minimum=0,
        above=True,
    )(100.0)
    max_waiting: int = Option(
        "uploads that may wait for --max_megapixels_at_once; a further one is answered 503 "
        "with a Retry-After header",
        minimum=0,
    )(16)
