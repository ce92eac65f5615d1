"""Configuration: every option of every command, declared once.

Each option is a dataclass field whose metadata holds an :class:`Option` (help, choices, other
spellings, bounds; :mod:`iqeclip.config.option`). The command line (:mod:`iqeclip.cli.options`),
YAML config files and the records beside checkpoints and results are all derived from these
fields. Options that several commands take (``--device``, ``--seed``, ``--batch_size``, ...) are
declared once in :mod:`iqeclip.config.shared`; each dataclass only chooses its default. This
module holds the model, training/test, predict and calibrate configurations;
:mod:`iqeclip.config.apps` those of the apps.

:class:`ModelConfig` holds everything that decides the shape and computation of a detector. It is
*resolved* against the backbone architecture (defaults that depend on the depth are filled in),
saved inside every checkpoint and beside it as YAML, and compared on load so that a checkpoint is
never silently loaded into a different model.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iqeclip.config.apps import (
    BENCH_MODEL,
    DEMO_MODEL,
    BenchmarkConfig,
    DemoConfig,
    ExportConfig,
    ReportConfig,
    ReproduceConfig,
    ServeConfig,
    SynthConfig,
)
from iqeclip.config.option import Checked, Option, check_bounds, check_types, option_of
from iqeclip.config.shared import (
    AXIS,
    BACKEND,
    BATCH_SIZE,
    CKPT_PATH,
    DATA_PATH,
    DEVICE,
    LEARNING_RATE,
    MANIFEST,
    MARGIN,
    MAX_MEGAPIXELS,
    MAX_SLICES,
    MAX_TOTAL_MEGAPIXELS,
    MIN_LESION_PX,
    MODEL_FILE,
    MODEL_NAME,
    OBJ,
    ON_BAD_INPUT,
    ORIENTATION,
    OUT,
    OVERWRITE,
    PERCENTILE,
    PRECISION,
    PRETRAIN,
    SEED,
    SETTING,
    SHOT,
    VOLUME_SCORE,
    WINDOW,
    WORKERS,
)
from iqeclip.errors import UserError

__all__ = [
    "BENCH_MODEL",
    "DEFAULT_SELECT",
    "DEMO_MODEL",
    "SELECTIONS",
    "BenchmarkConfig",
    "CalibrateConfig",
    "Checked",
    "DemoConfig",
    "ExportConfig",
    "ModelConfig",
    "Option",
    "PredictConfig",
    "ReportConfig",
    "ReproduceConfig",
    "RunConfig",
    "ServeConfig",
    "SynthConfig",
    "cache_home",
    "check_bounds",
    "default_cache_dir",
    "option_of",
    "parse_features_list",
]

# Fields that change the trainable state or the computation; a checkpoint must agree on all of
# them. ``pretrain`` is left out on purpose: the same weights can be named by a tag or a file.
ARCHITECTURE_FIELDS = (
    "model_name",
    "img_size",
    "features_list",
    "prompt_len",
    "deep_prompt_len",
    "total_d_layer_len",
    "use_global",
    "quick_gelu",
    "normalize",
    "iqm_layers",
    "iqm_heads",
)


MAX_IMG_SIZE = 1024
"""The largest ``--img_size``: twice the largest native input of open_clip's ViTs (512), so
that a stored or mistyped size cannot build a backbone of many gigabytes."""


def parse_features_list(tokens: Any) -> list[int] | None:
    """Accept ``6 12 18 24``, ``[6,12,18,24]``, ``6,12,18,24`` and a YAML list."""
    if tokens is None:
        return None
    if isinstance(tokens, (list, tuple)) and all(isinstance(t, int) for t in tokens):
        return [int(t) for t in tokens]
    text = " ".join(str(t) for t in tokens) if isinstance(tokens, (list, tuple)) else str(tokens)
    text = text.strip()
    body = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    parts = [p for p in re.split(r"[,\s]+", body) if p]
    if not parts or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise UserError(
            f"--features_list expects block numbers like 6 12 18 24 or [6,12,18,24], got {text!r}"
        )
    return [int(p) for p in parts]


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/iqeclip`` (``~/.cache/iqeclip``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iqeclip"


def default_cache_dir() -> str:
    """The frozen-feature cache folder, ``~/.cache/iqeclip/features``."""
    return str(cache_home() / "features")


@dataclass
class ModelConfig(Checked):
    """What a detector is made of.

    Attributes:
        model_name: open_clip architecture name (``ViT-L-14-336`` in the paper, ``iqe-tiny`` for tests).
        pretrain: ``none`` (random init), an open_clip tag (``openai``) or a weights file.
        img_size: square input side in pixels; position embeddings are resized to it.
        features_list: 1-based backbone blocks whose outputs are tapped; ``None`` = quartiles.
        prompt_len: number of class-based prompting tokens spliced in place of EOT (r).
        deep_prompt_len: number of learnable text prompt slots (n).
        total_d_layer_len: deep text prompts (0 = none, else text layers - 1); ``None`` = default.
        use_global: condition class tokens and IQM queries on the global image embedding.
        quick_gelu: build the backbone with QuickGELU (matches OpenAI weights; the paper used GELU).
        normalize: ``none`` (the paper: pixels in [0, 1]) or ``clip`` (CLIP mean/std).
        iqm_layers: IQM depth.
        iqm_heads: IQM attention heads.
        dropout: IQM dropout during training (the published runs effectively used 0.0).
        precision: dtype of the frozen vision tower: ``fp32``, ``bf16`` or ``fp16`` (CUDA only).
            Not an architecture field: a checkpoint trained in one precision tests in another.
    """

    model_name: str = MODEL_NAME("ViT-L-14-336")
    pretrain: str = PRETRAIN("openai")
    img_size: int = Option("input side in pixels", minimum=8, maximum=MAX_IMG_SIZE)(240)
    features_list: list[int] | None = Option(
        "1-based tapped blocks, '6 12 18 24' or '[6,12,18,24]' (None: the quartile blocks)",
        nargs="+",
        parse=parse_features_list,
    )(None)
    prompt_len: int = Option("class-based prompting tokens", minimum=1)(2)
    deep_prompt_len: int = Option("learnable text prompt slots", minimum=1)(1)
    total_d_layer_len: int | None = Option(
        "deep text prompt layers: 0 or text layers - 1 (None: text layers - 1)"
    )(None)
    use_global: bool = Option(
        "condition class tokens and IQM queries on the global image embedding (the published "
        "scripts inverted this flag); --no_use_global: image-independent tokens",
        negation="no_use_global",
    )(True)
    quick_gelu: bool = Option(
        "build the backbone with QuickGELU, the activation OpenAI trained with (default: exact "
        "GELU, as the published runs)"
    )(False)
    normalize: str = Option(
        "input normalisation: none (pixels in [0,1], the paper) or clip mean/std",
        choices=("none", "clip"),
    )("none")
    iqm_layers: int = Option("IQM depth", minimum=1)(4)
    iqm_heads: int = Option("IQM attention heads", minimum=1)(8)
    dropout: float = Option(
        "IQM dropout while training (0.0 is the published computation)",
        minimum=0,
        maximum=1,
        below=True,
    )(0.0)
    precision: str = PRECISION("fp32")

    def resolved(self, vision_layers: int, text_layers: int) -> ModelConfig:
        """Fill the architecture-dependent defaults and validate every field.

        Args:
            vision_layers: depth of the backbone's vision transformer.
            text_layers: depth of its text transformer.

        Returns:
            A new, fully specified configuration.

        Raises:
            UserError: naming the flag whose value cannot work with this backbone.
        """
        cfg = dataclasses.replace(self)
        if cfg.features_list is None:
            cfg.features_list = [vision_layers * (i + 1) // 4 for i in range(4)]
            cfg.features_list = sorted(set(max(1, f) for f in cfg.features_list))
        cfg.features_list = sorted(int(f) for f in cfg.features_list)
        bad = [f for f in cfg.features_list if not 1 <= f <= vision_layers]
        if bad:
            raise UserError(
                f"--features_list {bad} is outside 1..{vision_layers}, the blocks of {cfg.model_name}"
            )
        if len(set(cfg.features_list)) != len(cfg.features_list):
            raise UserError(f"--features_list {cfg.features_list} names a block twice")
        if cfg.total_d_layer_len is None:
            cfg.total_d_layer_len = text_layers - 1
        if cfg.total_d_layer_len not in (0, text_layers - 1):
            raise UserError(
                f"--total_d_layer_len must be 0 or {text_layers - 1} (text layers - 1) for "
                f"{cfg.model_name}, got {cfg.total_d_layer_len}"
            )
        check_bounds(cfg)
        if cfg.normalize not in ("none", "clip"):
            raise UserError(f"--normalize must be 'none' or 'clip', got {cfg.normalize!r}")
        if cfg.precision not in ("fp32", "bf16", "fp16"):
            raise UserError(f"--precision must be fp32, bf16 or fp16, got {cfg.precision!r}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON/YAML safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`: a stored configuration, checked as the command line's.

        Raises:
            UserError: naming the key that is unknown, missing (every architecture field must
                be stored), of another type or out of its option's bounds.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"unknown model configuration keys: {', '.join(unknown)}")
        missing = [name for name in ARCHITECTURE_FIELDS if name not in data]
        if missing:
            raise UserError(f"missing model configuration keys: {', '.join(missing)}")
        check_types(cls, data)
        return cls(**data)

    def mismatches(self, other: ModelConfig) -> list[str]:
        """Architecture fields on which ``self`` and ``other`` disagree, as ``name=a vs b``."""
        return [
            f"{name}={getattr(self, name)!r} vs {getattr(other, name)!r}"
            for name in ARCHITECTURE_FIELDS
            if getattr(self, name) != getattr(other, name)
        ]


DEFAULT_SELECT: dict[str, str] = {"zero": "source-val", "few": "last"}  # --select None
SELECTIONS: dict[str, str] = {
    "last": "the weights after the last epoch",
    "source-val": "the weights with the best image + pixel AUROC on held-out images of the "
    "training datasets (the target is never seen)",
    "target-test": "the weights with the best image + pixel AUROC on this test split (the "
    "published, optimistic protocol)",
}
"""What each ``--select`` rule keeps, as reports say it."""


@dataclass
class RunConfig(Checked):
    """Everything about a training or test run that is not the model.

    Attributes:
        obj: target dataset name (``Brain``, ``Liver``, ...; ``custom`` for your own folders).
        data_path: folder holding the ``<Name>_AD`` datasets.
        setting: ``zero`` or ``few`` (set by the command, not an option).
        shot: K for few-shot (testing: must be the checkpoint's; None takes it).
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
        report_dir: write the (final) test's scores, examples and HTML/markdown report here.
        resume: continue an interrupted training run from its saved state.
        save_every: save the training state every this many steps (and at each epoch end).
        on_bad_input: ``error`` stops at the first unusable file before any work; ``skip`` leaves
            such files out, counts them and lists them in the run folder.
        manifest: a CSV manifest of labelled inputs (:mod:`iqeclip.data.manifest`).
        min_lesion_px: manifest volumes: labelled pixels that make a slice abnormal.
        margin: manifest volumes: normal slices this close to a lesion are left out.
        window: intensity window ``CENTRE,WIDTH`` (recorded in the checkpoint).
        percentile: intensity percentiles ``LOW,HIGH`` (recorded in the checkpoint).
        axis: the plane volumes are sliced across.
        orientation: how volume slices face the model (``radiological``, ``canonical``,
            ``native``).
    """

    obj: str = OBJ("Brain", help="target dataset ('custom' for --normal/--abnormal data)")
    data_path: str = DATA_PATH("./data")
    setting: str = "zero"
    shot: int = SHOT(4)
    iterate: int = Option("0: read <K>-shot.txt; -1: draw the support set with --seed")(0)
    fewshot_seed_dir: str | None = Option(
        "folder of <Name>/<K>-shot.txt (None: <data_path>/fewshot_seed, then ./dataset/fewshot_seed)"
    )(None)
    batch_size: int = BATCH_SIZE(16)
    epochs: int = Option("epochs", aliases=("epoch",), minimum=1)(50)
    learning_rate: float = LEARNING_RATE(1e-4)
    seed: int = SEED(42)
    device: str = DEVICE("auto")
    workers: int | None = WORKERS(None)
    select: str | None = Option(
        "checkpoint selection (None: source-val zero-shot, last few-shot; target-test is the "
        "published, optimistic protocol)",
        choices=("last", "source-val", "target-test"),
    )(None)
    save_dir: str = Option("checkpoint folder")("./ckpt")
    ckpt_path: str | None = CKPT_PATH(None, help="checkpoint to test")
    log_path: str | None = Option("log file, appended (None: log/<command>_<obj>.log)")(None)
    metrics_json: str | None = Option("write the target test metrics to this JSON file")(None)
    overwrite: bool = OVERWRITE(False, help="replace an existing checkpoint or metrics file")
    cache_dir: str | None = Option(
        "frozen-feature cache folder; --no_cache: compute the backbone every time",
        negation="no_cache",
    )(default_cache_dir())
    cache_dtype: str = Option(
        "cache entries in fp32 (exact) or fp16 (half the disk)", choices=("fp32", "fp16")
    )("fp32")
    cache_budget_gb: float = Option("use the cache only if its size estimate fits (GB)", minimum=0)(
        50.0
    )
    normal_dir: str | None = Option("folder of normal support images", flag="normal")(None)
    abnormal_dir: str | None = Option("folder of abnormal support images", flag="abnormal")(None)
    masks_dir: str | None = Option(
        "masks of the abnormal images, same file names (optional)", flag="masks"
    )(None)
    report_dir: str | None = Option(
        "write scores, example maps and an HTML/markdown report to this folder", flag="report"
    )(None)
    resume: bool = Option("continue an interrupted run from its saved training state")(False)
    save_every: int = Option(
        "save the training state every N steps, and at each epoch end", minimum=1
    )(50)
    on_bad_input: str = ON_BAD_INPUT("error")
    manifest: str | None = MANIFEST(None)
    min_lesion_px: int = MIN_LESION_PX(1)
    margin: int = MARGIN(0)
    window: str | None = WINDOW(None)
    percentile: str | None = PERCENTILE(None)
    axis: int = AXIS(2)
    orientation: str = ORIENTATION("radiological")


@dataclass
class PredictConfig(Checked):
    """``iqeclip predict``: score your own images, DICOM series and NIfTI volumes."""

    ckpt_path: str | None = CKPT_PATH(None)
    inputs: list[str] = Option(
        "image files, folders (recursive), DICOM files or series folders, NIfTI volumes",
        positional=True,
        nargs="*",
    )([])
    out: str | None = OUT(None)
    masks: str | None = Option(
        "folder of ground-truth masks named like the inputs (contour on the overlay)"
    )(None)
    axis: int | None = AXIS(None, help=AXIS.help + " (None: the checkpoint's)")
    orientation: str | None = ORIENTATION(None, help=ORIENTATION.help + " (None: the checkpoint's)")
    window: str | None = WINDOW(None)
    percentile: str | None = PERCENTILE(None)
    volume_score: str | None = VOLUME_SCORE(
        None,
        help="a volume's score from its slice scores (volumes.csv): max, or topk:K, the "
        "mean of the K highest (None: the calibrated rule, else max)",
    )
    outputs: str | None = Option(
        "what to write per slice, comma-separated from overlay, map, npy, mask, input (the "
        "picture as read) (None: overlay,map,npy, and mask when the checkpoint has a calibrated "
        "pixel threshold)"
    )(None)
    batch_size: int = BATCH_SIZE(8, help="images per forward pass")
    workers: int | None = WORKERS(None)
    device: str = DEVICE("auto")
    setting: str | None = SETTING(None)
    overwrite: bool = OVERWRITE(
        False, help="remove the outputs an earlier run listed in --out/predictions.csv, then run"
    )
    resume: bool = Option("continue an interrupted predict run in --out: score what is missing")(
        False
    )
    on_bad_input: str = ON_BAD_INPUT("error")
    backend: str = BACKEND("torch")
    model: str | None = MODEL_FILE(None)
    max_megapixels: float = MAX_MEGAPIXELS(50.0)
    max_slices: int = MAX_SLICES(2000)
    max_total_megapixels: float = MAX_TOTAL_MEGAPIXELS(500.0)


@dataclass
class CalibrateConfig(Checked):
    """``iqeclip calibrate``: choose decision thresholds and store them in the checkpoint."""

    ckpt_path: str | None = CKPT_PATH(None)
    normal: str | None = Option("folder of normal images (threshold by --target_fpr)")(None)
    data_path: str | None = DATA_PATH(
        None, help="folder with <Name>_AD datasets: calibrate on --obj's valid split"
    )
    obj: str | None = OBJ(None, help="dataset name for --data_path")
    target_fpr: float = Option(
        "false-positive rate allowed on normal calibration images", minimum=0, maximum=1, below=True
    )(0.05)
    f1: bool = Option("maximise F1 on the labelled valid split instead of --target_fpr")(False)
    manifest: str | None = MANIFEST(
        None,
        help="calibrate on the valid rows of this CSV manifest (docs/workflows.md); its "
        "volumes also calibrate the volume score",
    )
    min_lesion_px: int = MIN_LESION_PX(1)
    margin: int = MARGIN(0)
    volume_score: str = VOLUME_SCORE("max")
    window: str | None = WINDOW(None)
    percentile: str | None = PERCENTILE(None)
    axis: int | None = AXIS(None, help=AXIS.help + " (None: the checkpoint's)")
    orientation: str | None = ORIENTATION(None, help=ORIENTATION.help + " (None: the checkpoint's)")
    batch_size: int = BATCH_SIZE(8, help="images per forward pass")
    device: str = DEVICE("auto")
    setting: str | None = SETTING(None)
    on_bad_input: str = ON_BAD_INPUT("error")
