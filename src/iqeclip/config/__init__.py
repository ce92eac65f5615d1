"""Configuration: every option of every command, declared once.

Each option is a dataclass field whose metadata holds an :class:`Option` (help, choices, other
spellings, bounds, the commands that take it, whether ``--resume`` holds it fixed, whether a
checkpoint must agree on it; :mod:`iqeclip.config.option`). The command line
(:mod:`iqeclip.cli.options`), YAML config files, the records beside checkpoints and results and
the settings a resumed run must keep are all derived from these fields: adding an option is one
field in one dataclass. Options that several commands take (``--device``, ``--seed``,
``--batch_size``, ...) are declared once in :mod:`iqeclip.config.shared`; each dataclass only
chooses its default. This module holds the model and training/test configurations;
:mod:`iqeclip.config.scoring` those of predict and calibrate, :mod:`iqeclip.config.apps` those of
the apps.

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
    IMPORT_MODEL,
    IMPORT_READ,
    BankConfig,
    BenchmarkConfig,
    DemoConfig,
    ExportCheckpointConfig,
    ExportConfig,
    ImportCheckpointConfig,
    ReportConfig,
    ReproduceConfig,
    ServeConfig,
    SynthConfig,
)
from iqeclip.config.option import (
    FIXED_ON_RESUME,
    Checked,
    Option,
    check_bounds,
    check_types,
    fields_for,
    option_of,
    resume_fixed,
)
from iqeclip.config.scoring import CalibrateConfig, PredictConfig
from iqeclip.config.shared import (
    AXIS,
    BATCH_SIZE,
    CKPT_PATH,
    DATA_PATH,
    DEVICE,
    FEW,
    LABEL_VALUES,
    LAYOUT,
    LEARNING_RATE,
    MANIFEST,
    MARGIN,
    MIN_LESION_PX,
    MODEL_COMMANDS,
    MODEL_NAME,
    OBJ,
    ON_BAD_INPUT,
    ORIENTATION,
    OVERWRITE,
    PERCENTILE,
    PRECISION,
    PRETRAIN,
    REPRODUCE,
    RUNS,
    SCORE,
    SEED,
    SHOT,
    TEST,
    TRAIN,
    WINDOW,
    WORKERS,
)
from iqeclip.errors import UserError, param

__all__ = [
    "BENCH_MODEL",
    "DEFAULT_SELECT",
    "DEMO_MODEL",
    "IMPORT_MODEL",
    "IMPORT_READ",
    "SELECTIONS",
    "BankConfig",
    "BenchmarkConfig",
    "CalibrateConfig",
    "Checked",
    "DemoConfig",
    "ExportCheckpointConfig",
    "ExportConfig",
    "ImportCheckpointConfig",
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
    "fields_for",
    "option_of",
    "parse_features_list",
    "resume_fixed",
]

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
            f"{param('features_list')} expects block numbers like 6 12 18 24 or [6,12,18,24], "
            f"got {text!r}"
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

    The architecture fields (``architecture=True``) change the trainable state or the
    computation; a checkpoint must agree on all of them. ``pretrain`` is not one on purpose: the
    same weights can be named by a tag or a file.
    """

    model_name: str = MODEL_NAME("ViT-L-14-336", commands=MODEL_COMMANDS, architecture=True)
    pretrain: str = PRETRAIN("openai", commands=(*MODEL_COMMANDS, *SCORE, "export"))
    img_size: int = Option(
        "input side in pixels",
        minimum=8,
        maximum=MAX_IMG_SIZE,
        commands=MODEL_COMMANDS,
        architecture=True,
    )(240)
    features_list: list[int] | None = Option(
        "1-based tapped blocks, '6 12 18 24' or '[6,12,18,24]' (None: the quartile blocks)",
        nargs="+",
        parse=parse_features_list,
        commands=MODEL_COMMANDS,
        architecture=True,
    )(None)
    prompt_len: int = Option(
        "class-based prompting tokens", minimum=1, commands=MODEL_COMMANDS, architecture=True
    )(2)
    deep_prompt_len: int = Option(
        "learnable text prompt slots", minimum=1, commands=MODEL_COMMANDS, architecture=True
    )(1)
    total_d_layer_len: int | None = Option(
        "deep text prompt layers: 0 or text layers - 1 (None: text layers - 1)",
        commands=MODEL_COMMANDS,
        architecture=True,
    )(None)
    use_global: bool = Option(
        "condition class tokens and IQM queries on the global image embedding (the published "
        "scripts inverted this flag); --no_use_global: image-independent tokens",
        negation="no_use_global",
        commands=MODEL_COMMANDS,
        architecture=True,
    )(True)
    quick_gelu: bool = Option(
        "build the backbone with QuickGELU, the activation OpenAI trained with (default: exact "
        "GELU, as the published runs)",
        commands=MODEL_COMMANDS,
        architecture=True,
    )(False)
    normalize: str = Option(
        "input normalisation: none (pixels in [0,1], the paper) or clip mean/std",
        choices=("none", "clip"),
        commands=MODEL_COMMANDS,
        architecture=True,
    )("none")
    iqm_layers: int = Option("IQM depth", minimum=1, commands=MODEL_COMMANDS, architecture=True)(4)
    iqm_heads: int = Option(
        "IQM attention heads", minimum=1, commands=MODEL_COMMANDS, architecture=True
    )(8)
    dropout: float = Option(
        "IQM dropout while training (0.0 is the published computation)",
        minimum=0,
        maximum=1,
        below=True,
        commands=MODEL_COMMANDS,
    )(0.0)
    precision: str = PRECISION("fp32", commands=(*MODEL_COMMANDS, *SCORE))

    def resolved(self, vision_layers: int, text_layers: int) -> ModelConfig:
        """Fill the architecture-dependent defaults and validate every field.

        Args:
            vision_layers: depth of the backbone's vision transformer.
            text_layers: depth of its text transformer.

        Returns:
            A new, fully specified configuration.

        Raises:
            UserError: naming the parameter whose value cannot work with this backbone.
        """
        cfg = dataclasses.replace(self)
        if cfg.features_list is None:
            cfg.features_list = [vision_layers * (i + 1) // 4 for i in range(4)]
            cfg.features_list = sorted(set(max(1, f) for f in cfg.features_list))
        cfg.features_list = sorted(int(f) for f in cfg.features_list)
        bad = [f for f in cfg.features_list if not 1 <= f <= vision_layers]
        if bad:
            raise UserError(
                f"{param('features_list')} {bad} is outside 1..{vision_layers}, the blocks of "
                f"{cfg.model_name}"
            )
        if len(set(cfg.features_list)) != len(cfg.features_list):
            raise UserError(f"{param('features_list')} {cfg.features_list} names a block twice")
        if cfg.total_d_layer_len is None:
            cfg.total_d_layer_len = text_layers - 1
        if cfg.total_d_layer_len not in (0, text_layers - 1):
            raise UserError(
                f"{param('total_d_layer_len')} must be 0 or {text_layers - 1} (text layers - 1) "
                "for "
                f"{cfg.model_name}, got {cfg.total_d_layer_len}"
            )
        check_bounds(cfg)
        if cfg.normalize not in ("none", "clip"):
            raise UserError(f"{param('normalize')} must be 'none' or 'clip', got {cfg.normalize!r}")
        if cfg.precision not in ("fp32", "bf16", "fp16"):
            raise UserError(
                f"{param('precision')} must be fp32, bf16 or fp16, got {cfg.precision!r}"
            )
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


ARCHITECTURE_FIELDS = tuple(
    f.name for f in dataclasses.fields(ModelConfig) if getattr(option_of(f), "architecture", False)
)
"""The fields of :class:`ModelConfig` declared ``architecture`` (see its docstring)."""

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

    Each option names the commands that take it (``train-*``, ``test-*``, ``reproduce``) and
    whether a resumed training run must keep it (``fixed_on_resume``).

    Attributes:
        obj: target dataset name (``Brain``, ``Liver``, ...; ``custom`` for your own folders).
        data_path: folder holding the datasets (``<Name>_AD`` or BMAD's ``<Name>`` folders).
        layout: ``bmad`` or ``mvfa``: the folder layout of ``data_path`` (None: the one that
            holds each dataset).
        setting: ``zero`` or ``few`` (set by the command, not an option; fixed on ``--resume``).
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
        label_values: label volumes: the label values that count as anomalous (``1,2,4``;
            None: any non-zero value).
        window: intensity window ``CENTRE,WIDTH`` (recorded in the checkpoint).
        percentile: intensity percentiles ``LOW,HIGH`` (recorded in the checkpoint).
        axis: the plane volumes are sliced across.
        orientation: how volume slices face the model (``radiological``, ``canonical``,
            ``native``).
    """

    obj: str = OBJ(
        "Brain",
        help="target dataset ('custom' for --normal/--abnormal data)",
        commands=RUNS,
        fixed_on_resume=True,
    )
    data_path: str = DATA_PATH("./data", commands=RUNS + REPRODUCE)
    layout: str | None = LAYOUT(None, commands=RUNS + REPRODUCE)
    setting: str = dataclasses.field(default="zero", metadata={FIXED_ON_RESUME: True})
    shot: int = SHOT(4, commands=FEW, fixed_on_resume=True)
    iterate: int = Option(
        "0: read <K>-shot.txt; -1: draw the support set with --seed",
        commands=FEW,
        fixed_on_resume=True,
    )(0)
    fewshot_seed_dir: str | None = Option(
        "folder of <Name>/<K>-shot.txt (None: <data_path>/fewshot_seed, then "
        "./dataset/fewshot_seed)",
        commands=FEW + REPRODUCE,
    )(None)
    batch_size: int = BATCH_SIZE(16, commands=RUNS + REPRODUCE, fixed_on_resume=True)
    epochs: int = Option(
        "epochs", aliases=("epoch",), minimum=1, commands=TRAIN + REPRODUCE, fixed_on_resume=True
    )(50)
    learning_rate: float = LEARNING_RATE(1e-4, commands=TRAIN + REPRODUCE, fixed_on_resume=True)
    seed: int = SEED(42, commands=RUNS + REPRODUCE, fixed_on_resume=True)
    device: str = DEVICE("auto", commands=RUNS + REPRODUCE)
    workers: int | None = WORKERS(None, commands=RUNS + REPRODUCE)
    select: str | None = Option(
        "checkpoint selection (None: source-val zero-shot, last few-shot; target-test is the "
        "published, optimistic protocol)",
        choices=("last", "source-val", "target-test"),
        commands=TRAIN + REPRODUCE,
        fixed_on_resume=True,
    )(None)
    save_dir: str = Option("checkpoint folder", commands=TRAIN)("./ckpt")
    ckpt_path: str | None = CKPT_PATH(None, help="checkpoint to test", commands=TEST)
    log_path: str | None = Option(
        "log file, appended (None: log/<command>_<obj>.log)", commands=RUNS
    )(None)
    metrics_json: str | None = Option(
        "write the target test metrics to this JSON file", commands=RUNS
    )(None)
    overwrite: bool = OVERWRITE(
        False, help="replace an existing checkpoint or metrics file", commands=RUNS
    )
    cache_dir: str | None = Option(
        "frozen-feature cache folder; --no_cache: compute the backbone every time",
        negation="no_cache",
        commands=RUNS + REPRODUCE,
    )(default_cache_dir())
    cache_dtype: str = Option(
        "cache entries in fp32 (exact) or fp16 (half the disk)",
        choices=("fp32", "fp16"),
        commands=RUNS + REPRODUCE,
    )("fp32")
    cache_budget_gb: float = Option(
        "use the cache only if its size estimate fits (GB)", minimum=0, commands=RUNS + REPRODUCE
    )(50.0)
    normal_dir: str | None = Option(
        "folder of normal support images",
        flag="normal",
        commands=("train-few",),
        fixed_on_resume=True,
    )(None)
    abnormal_dir: str | None = Option(
        "folder of abnormal support images",
        flag="abnormal",
        commands=("train-few",),
        fixed_on_resume=True,
    )(None)
    masks_dir: str | None = Option(
        "masks of the abnormal images, same file names (optional)",
        flag="masks",
        commands=("train-few",),
        fixed_on_resume=True,
    )(None)
    report_dir: str | None = Option(
        "write scores, example maps and an HTML/markdown report to this folder",
        flag="report",
        commands=RUNS,
    )(None)
    resume: bool = Option(
        "continue an interrupted run from its saved training state", commands=TRAIN
    )(False)
    save_every: int = Option(
        "save the training state every N steps, and at each epoch end",
        minimum=1,
        commands=TRAIN + REPRODUCE,
    )(50)
    on_bad_input: str = ON_BAD_INPUT("error", commands=RUNS + REPRODUCE)
    manifest: str | None = MANIFEST(None, commands=RUNS, fixed_on_resume=True)
    min_lesion_px: int = MIN_LESION_PX(1, commands=RUNS, fixed_on_resume=True)
    margin: int = MARGIN(0, commands=RUNS, fixed_on_resume=True)
    label_values: str | None = LABEL_VALUES(None, commands=RUNS, fixed_on_resume=True)
    window: str | None = WINDOW(None, commands=RUNS, fixed_on_resume=True)
    percentile: str | None = PERCENTILE(None, commands=RUNS, fixed_on_resume=True)
    axis: int = AXIS(2, commands=RUNS, fixed_on_resume=True)
    orientation: str = ORIENTATION("radiological", commands=RUNS, fixed_on_resume=True)
