"""Command line: ``iqeclip <command>`` (also ``python -m iqeclip``), a thin layer over the API.

Every flag exists in both spellings (``--batch_size`` and ``--batch-size``). Problems the user can
fix are reported as one line ``error: ...`` with exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from iqeclip.config import ModelConfig
from iqeclip.errors import UserError


def flag(name: str) -> list[str]:
    """Both spellings of a flag: ``--batch_size`` and ``--batch-size``."""
    spellings = [f"--{name}", f"--{name.replace('_', '-')}"]
    return list(dict.fromkeys(spellings))


def parse_features_list(tokens: Sequence[str] | None) -> list[int] | None:
    """Accept ``6 12 18 24``, ``[6,12,18,24]`` and ``6,12,18,24``."""
    if tokens is None:
        return None
    text = " ".join(tokens).strip()
    body = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    parts = [p for p in re.split(r"[,\s]+", body) if p]
    if not parts or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise UserError(
            f"--features_list expects block numbers like 6 12 18 24 or [6,12,18,24], got {text!r}"
        )
    return [int(p) for p in parts]


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Flags that define the detector (see :class:`~iqeclip.config.ModelConfig`).

    Every default is ``None`` here: training fills it from :class:`ModelConfig`, testing from
    the checkpoint, so only flags given explicitly override.
    """
    d = ModelConfig()
    g = parser.add_argument_group("model")
    g.add_argument(
        *flag("model_name"),
        dest="model_name",
        help=f"open_clip architecture (default {d.model_name}; iqe-tiny for tests)",
    )
    g.add_argument(
        *flag("pretrain"),
        dest="pretrain",
        help="none | an open_clip tag such as openai | a weights file (OpenAI "
        f"TorchScript .pt, state dict, safetensors) (default {d.pretrain})",
    )
    g.add_argument(
        *flag("img_size"),
        dest="img_size",
        type=int,
        help=f"input side in pixels (default {d.img_size})",
    )
    g.add_argument(
        *flag("features_list"),
        dest="features_list",
        nargs="+",
        help="1-based tapped blocks, '6 12 18 24' or '[6,12,18,24]' (default: quartiles)",
    )
    g.add_argument(
        *flag("prompt_len"),
        dest="prompt_len",
        type=int,
        help=f"class-based prompting tokens (default {d.prompt_len})",
    )
    g.add_argument(
        *flag("deep_prompt_len"),
        dest="deep_prompt_len",
        type=int,
        help=f"learnable text prompt slots (default {d.deep_prompt_len})",
    )
    g.add_argument(
        *flag("total_d_layer_len"),
        dest="total_d_layer_len",
        type=int,
        help="deep text prompt layers: 0 or text layers - 1 (default)",
    )
    g.add_argument(
        *flag("use_global"),
        dest="use_global",
        action="store_const",
        const=True,
        help="condition class tokens and IQM queries on the global image embedding "
        "(default on; the published scripts inverted this flag)",
    )
    g.add_argument(
        *flag("no_use_global"),
        dest="use_global",
        action="store_const",
        const=False,
        help="image-independent class tokens and queries",
    )
    g.add_argument(
        *flag("quick_gelu"),
        dest="quick_gelu",
        action="store_const",
        const=True,
        help="build the backbone with QuickGELU, the activation OpenAI trained with "
        "(default: exact GELU, as the published runs)",
    )
    g.add_argument(
        *flag("normalize"),
        dest="normalize",
        choices=["none", "clip"],
        help="input normalisation: none (pixels in [0,1], the paper; default) or clip mean/std",
    )
    g.add_argument(
        *flag("iqm_layers"), dest="iqm_layers", type=int, help=f"IQM depth (default {d.iqm_layers})"
    )
    g.add_argument(
        *flag("iqm_heads"),
        dest="iqm_heads",
        type=int,
        help=f"IQM attention heads (default {d.iqm_heads})",
    )
    g.add_argument(
        *flag("dropout"),
        dest="dropout",
        type=float,
        help=f"IQM dropout while training (default {d.dropout}, the published computation)",
    )
    g.add_argument(
        *flag("precision"),
        dest="precision",
        choices=["fp32", "bf16", "fp16"],
        help="dtype of the frozen vision tower (default fp32; fp16 needs CUDA); the trainable "
        "head always runs in fp32",
    )


MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The model flags given on the command line (``features_list`` parsed)."""
    given = {name: getattr(args, name) for name in MODEL_FIELDS if getattr(args, name) is not None}
    if "features_list" in given:
        given["features_list"] = parse_features_list(given["features_list"])
    return given


def model_config_from_args(args: argparse.Namespace) -> ModelConfig:
    """The :class:`ModelConfig` named by the parsed flags (not yet resolved)."""
    return ModelConfig(**model_overrides(args))


def cmd_info(args: argparse.Namespace) -> None:
    """Print the resolved configuration and trainable parameters; check a weights file's shapes."""
    from iqeclip.model.backbone import inspect_weights
    from iqeclip.model.detector import IQEClip

    model = IQEClip.build(model_config_from_args(args), device="meta")
    cfg = model.config
    weights_line = inspect_weights(cfg.model_name, cfg.pretrain, cfg.img_size)
    for key, value in cfg.to_dict().items():
        print(f"{key}: {value}")
    print(weights_line)
    note = (
        "exact GELU, as the published runs"
        if model.activation == "GELU"
        else "QuickGELU (--quick_gelu)"
    )
    print(f"activation: {model.activation} ({note})")
    frozen = sum(p.numel() for p in model.backbone.parameters())
    print(f"frozen backbone parameters: {frozen}")
    print("trainable parameters per module:")
    counts = model.trainable_parameters()
    for name, count in counts.items():
        print(f"  {name}: {count}")
    print(f"trainable parameters: {sum(counts.values())}")


def add_run_args(parser: argparse.ArgumentParser, train: bool, few: bool) -> None:
    """Flags of the four workflows (REFERENCE §9 names, both spellings)."""
    from iqeclip.engine.workflows import RunConfig

    d = RunConfig()
    g = parser.add_argument_group("run")
    g.add_argument(
        *flag("obj"),
        dest="obj",
        default=None,
        help="target dataset (default Brain; 'custom' for --normal/--abnormal data)",
    )
    g.add_argument(
        *flag("data_path"),
        dest="data_path",
        default=d.data_path,
        help="folder with the <Name>_AD datasets (default %(default)s)",
    )
    g.add_argument(
        *flag("batch_size"),
        dest="batch_size",
        type=int,
        default=d.batch_size,
        help="batch size (default %(default)s)",
    )
    g.add_argument(
        *flag("seed"),
        dest="seed",
        type=int,
        default=d.seed,
        help="random seed (default %(default)s)",
    )
    g.add_argument(
        *flag("device"), dest="device", default=d.device, help="auto | cpu | cuda | cuda:N"
    )
    g.add_argument(
        *flag("workers"),
        dest="workers",
        type=int,
        default=None,
        help="DataLoader workers (default 4 on CUDA, 0 on CPU)",
    )
    g.add_argument(
        *flag("log_path"),
        dest="log_path",
        default=None,
        help="log file, appended (default log/<command>_<obj>.log)",
    )
    g.add_argument(
        *flag("metrics_json"),
        dest="metrics_json",
        default=None,
        help="write the target test metrics to this JSON file",
    )
    g.add_argument(
        *flag("overwrite"),
        dest="overwrite",
        action="store_true",
        help="replace an existing checkpoint or metrics file",
    )
    g.add_argument(
        *flag("on_bad_input"),
        dest="on_bad_input",
        choices=["error", "skip"],
        default="error",
        help="error: stop before any work at the first unusable file (default); skip: leave "
        "such files out, count them and list them in the run folder",
    )
    c = parser.add_argument_group("feature cache")
    c.add_argument(
        *flag("cache_dir"),
        dest="cache_dir",
        default=d.cache_dir,
        help="frozen-feature cache folder (default %(default)s)",
    )
    c.add_argument(
        *flag("no_cache"),
        dest="cache_dir",
        action="store_const",
        const=None,
        help="compute the backbone every time",
    )
    c.add_argument(
        *flag("cache_dtype"),
        dest="cache_dtype",
        choices=["fp32", "fp16"],
        default=d.cache_dtype,
        help="cache entries in fp32 (exact, default) or fp16 (half the disk)",
    )
    c.add_argument(
        *flag("cache_budget_gb"),
        dest="cache_budget_gb",
        type=float,
        default=d.cache_budget_gb,
        help="use the cache only if its size estimate fits (default %(default)s GB)",
    )
    if few:
        g.add_argument(
            *flag("shot"), dest="shot", type=int, default=d.shot, help="K (default %(default)s)"
        )
        g.add_argument(
            *flag("iterate"),
            dest="iterate",
            type=int,
            default=d.iterate,
            help="0: read <K>-shot.txt; -1: draw the support set with --seed",
        )
        g.add_argument(
            *flag("fewshot_seed_dir"),
            dest="fewshot_seed_dir",
            default=None,
            help="folder of <Name>/<K>-shot.txt (default <data_path>/fewshot_seed, "
            "then ./dataset/fewshot_seed)",
        )
    if train:
        g.add_argument(
            *flag("resume"),
            dest="resume",
            action="store_true",
            help="continue an interrupted run from its saved training state",
        )
        g.add_argument(
            *flag("save_every"),
            dest="save_every",
            type=int,
            default=d.save_every,
            help="save the training state every N steps, and at each epoch end (default %(default)s)",
        )
    if train and few:
        own = parser.add_argument_group("your own data (instead of the <obj>_AD valid split)")
        own.add_argument(
            *flag("normal"), dest="normal_dir", default=None, help="folder of normal support images"
        )
        own.add_argument(
            *flag("abnormal"),
            dest="abnormal_dir",
            default=None,
            help="folder of abnormal support images",
        )
        own.add_argument(
            *flag("masks"),
            dest="masks_dir",
            default=None,
            help="masks of the abnormal images, same file names (optional)",
        )
    if train:
        g.add_argument(
            *flag("epoch"),
            *flag("epochs"),
            dest="epochs",
            type=int,
            default=d.epochs,
            help="epochs (default %(default)s)",
        )
        g.add_argument(
            *flag("learning_rate"),
            *flag("lr"),
            dest="learning_rate",
            type=float,
            default=d.learning_rate,
            help="learning rate (default %(default)s; 0.01 for the temperature)",
        )
        g.add_argument(
            *flag("save_dir"),
            dest="save_dir",
            default=d.save_dir,
            help="checkpoint folder (default %(default)s)",
        )
        choices = ["last", "source-val", "target-test"] if not few else ["last", "target-test"]
        g.add_argument(
            *flag("select"),
            dest="select",
            choices=choices,
            default=None,
            help="checkpoint selection (default: "
            + ("last" if few else "source-val")
            + "; target-test is the published, optimistic protocol)",
        )
    else:
        g.add_argument(
            *flag("ckpt_path"), dest="ckpt_path", required=True, help="checkpoint to test"
        )
        g.add_argument(
            *flag("report"),
            dest="report_dir",
            default=None,
            help="write scores, example maps and an HTML/markdown report to this folder",
        )


def run_config_from_args(args: argparse.Namespace, setting: str):
    """The :class:`~iqeclip.engine.workflows.RunConfig` named by the parsed flags."""
    from iqeclip.engine.workflows import RunConfig

    fields = {f: getattr(args, f) for f in RunConfig.__dataclass_fields__ if hasattr(args, f)}
    if fields.get("obj") is None:
        fields["obj"] = "custom" if fields.get("normal_dir") else "Brain"
    run = RunConfig(setting=setting, **fields)
    if run.log_path is None:
        run.log_path = f"log/{args.command}_{run.obj}.log"
    return run


def _parser_for(train: bool, few: bool) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        add_model_args(parser)
        add_run_args(parser, train=train, few=few)

    return add


def cmd_train_zero(args: argparse.Namespace) -> None:
    from iqeclip.engine.workflows import train_zero

    train_zero(model_config_from_args(args), run_config_from_args(args, "zero"))


def cmd_train_few(args: argparse.Namespace) -> None:
    from iqeclip.engine.workflows import train_few

    train_few(model_config_from_args(args), run_config_from_args(args, "few"))


def cmd_test_zero(args: argparse.Namespace) -> None:
    from iqeclip.engine.workflows import test

    test(model_overrides(args), run_config_from_args(args, "zero"))


def cmd_test_few(args: argparse.Namespace) -> None:
    from iqeclip.engine.workflows import test

    test(model_overrides(args), run_config_from_args(args, "few"))


def add_synth_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(*flag("out"), dest="out", required=True, help="output folder")
    parser.add_argument(
        *flag("size"),
        dest="size",
        type=int,
        default=12,
        help="test images per class and dataset (default %(default)s)",
    )
    parser.add_argument(
        *flag("seed"), dest="seed", type=int, default=0, help="seed (default %(default)s)"
    )
    parser.add_argument(
        *flag("image_size"),
        dest="image_size",
        type=int,
        default=128,
        help="image side in pixels (default %(default)s)",
    )
    parser.add_argument(
        *flag("overwrite"),
        dest="overwrite",
        action="store_true",
        help="rewrite the datasets in a non-empty folder",
    )


def cmd_synth(args: argparse.Namespace) -> None:
    from iqeclip.data.synth import write_benchmark

    counts = write_benchmark(args.out, args.size, args.seed, args.image_size, args.overwrite)
    for name, splits in counts.items():
        print(f"{name}_AD: " + ", ".join(f"{split} {n}" for split, n in splits.items()))
    print(f"synthetic benchmark written to {args.out}")


def _add_inference_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by predict and calibrate."""
    parser.add_argument(*flag("ckpt_path"), dest="ckpt_path", required=True, help="checkpoint")
    parser.add_argument(
        *flag("batch_size"),
        dest="batch_size",
        type=int,
        default=8,
        help="images per forward pass (default %(default)s)",
    )
    parser.add_argument(
        *flag("device"), dest="device", default="auto", help="auto | cpu | cuda | cuda:N"
    )
    parser.add_argument(
        *flag("setting"),
        dest="setting",
        choices=["zero", "few"],
        default=None,
        help="image-score rule (default: the checkpoint's training setting)",
    )
    parser.add_argument(
        *flag("pretrain"),
        dest="pretrain",
        default=None,
        help="backbone weights if they moved since training (tag or file)",
    )
    parser.add_argument(
        *flag("precision"),
        dest="precision",
        choices=["fp32", "bf16", "fp16"],
        default=None,
        help="vision-tower dtype (default: as trained)",
    )
    parser.add_argument(
        *flag("on_bad_input"),
        dest="on_bad_input",
        choices=["error", "skip"],
        default="error",
        help="error: stop at an unusable file; skip: leave it out and list it",
    )


def add_predict_args(parser: argparse.ArgumentParser) -> None:
    _add_inference_args(parser)
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders (recursive), DICOM files or series folders, NIfTI volumes",
    )
    parser.add_argument(*flag("out"), dest="out", required=True, help="output folder")
    parser.add_argument(
        *flag("masks"),
        dest="masks",
        default=None,
        help="folder of ground-truth masks named like the inputs (contour on the overlay)",
    )
    parser.add_argument(
        *flag("axis"),
        dest="axis",
        type=int,
        default=2,
        help="NIfTI slicing axis 0, 1 or 2 (default %(default)s)",
    )
    parser.add_argument(
        *flag("window"),
        dest="window",
        default=None,
        help="intensity window CENTRE,WIDTH (e.g. 40,400 for a CT HU window); "
        "default: the DICOM's own window, else min-max",
    )
    parser.add_argument(
        *flag("percentile"),
        dest="percentile",
        default=None,
        help="clip intensities to percentiles LOW,HIGH before min-max (e.g. 1,99 for MRI)",
    )
    parser.add_argument(
        *flag("overwrite"),
        dest="overwrite",
        action="store_true",
        help="replace the outputs of an earlier run in --out",
    )


def _inference_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("pretrain", "precision") if getattr(args, k) is not None}


def cmd_predict(args: argparse.Namespace) -> None:
    from iqeclip.inference.predict import predict

    predict(
        args.ckpt_path,
        args.inputs,
        args.out,
        masks=args.masks,
        axis=args.axis,
        window=args.window,
        percentile=args.percentile,
        batch_size=args.batch_size,
        device=args.device,
        setting=args.setting,
        model_overrides=_inference_overrides(args),
        overwrite=args.overwrite,
        on_bad_input=args.on_bad_input,
    )


def add_calibrate_args(parser: argparse.ArgumentParser) -> None:
    _add_inference_args(parser)
    parser.add_argument(
        *flag("normal"),
        dest="normal",
        default=None,
        help="folder of normal images (threshold by --target_fpr)",
    )
    parser.add_argument(
        *flag("data_path"),
        dest="data_path",
        default=None,
        help="folder with <Name>_AD datasets: calibrate on --obj's valid split",
    )
    parser.add_argument(*flag("obj"), dest="obj", default=None, help="dataset name for --data_path")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument(
        *flag("target_fpr"),
        dest="target_fpr",
        type=float,
        default=0.05,
        help="false-positive rate allowed on normal calibration images (default %(default)s)",
    )
    rule.add_argument(
        *flag("f1"),
        dest="f1",
        action="store_true",
        help="maximise F1 on the labelled valid split instead",
    )


def cmd_calibrate(args: argparse.Namespace) -> None:
    from iqeclip.inference.calibrate import calibrate_checkpoint

    calibrate_checkpoint(
        args.ckpt_path,
        normal=args.normal,
        data_path=args.data_path,
        obj=args.obj,
        target_fpr=args.target_fpr,
        f1=args.f1,
        batch_size=args.batch_size,
        device=args.device,
        setting=args.setting,
        model_overrides=_inference_overrides(args),
        on_bad_input=args.on_bad_input,
    )


def add_report_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder written by test-* --report")
    parser.add_argument(
        *flag("top_k"),
        dest="top_k",
        type=int,
        default=8,
        help="highest- and lowest-scoring examples to show (default %(default)s)",
    )


def cmd_report(args: argparse.Namespace) -> None:
    from iqeclip.report.render import write_report

    html, md = write_report(args.run_dir, top_k=args.top_k)
    print(f"report: {html} and {md}")


def add_benchmark_args(parser: argparse.ArgumentParser) -> None:
    from iqeclip.apps.benchmark import add_benchmark_args as add

    add(parser)


def cmd_benchmark(args: argparse.Namespace) -> None:
    from iqeclip.apps.benchmark import run_benchmark

    run_benchmark(args)


def add_demo_args(parser: argparse.ArgumentParser) -> None:
    from iqeclip.apps.demo import add_demo_args as add

    add(parser)


def cmd_demo(args: argparse.Namespace) -> None:
    from iqeclip.apps.demo import run_demo

    run_demo(args)


COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], None]]
] = {
    "train-zero": (
        "zero-shot training: leave the target out, train on the other datasets",
        _parser_for(True, False),
        cmd_train_zero,
    ),
    "train-few": (
        "few-shot training on K abnormal + K normal support images of the target",
        _parser_for(True, True),
        cmd_train_few,
    ),
    "test-zero": (
        "test a zero-shot checkpoint on the target's test split",
        _parser_for(False, False),
        cmd_test_zero,
    ),
    "test-few": (
        "test a few-shot checkpoint on the target's test split",
        _parser_for(False, True),
        cmd_test_few,
    ),
    "synth": ("write the synthetic BMAD-layout benchmark", add_synth_args, cmd_synth),
    "demo": ("offline end-to-end demo on the synthetic benchmark", add_demo_args, cmd_demo),
    "predict": (
        "score your own images, DICOM and NIfTI; write heat maps and predictions.csv",
        add_predict_args,
        cmd_predict,
    ),
    "calibrate": (
        "choose decision thresholds and store them in the checkpoint",
        add_calibrate_args,
        cmd_calibrate,
    ),
    "report": ("HTML and markdown report of a test run folder", add_report_args, cmd_report),
    "benchmark": (
        "measure inference and training speed as ratios to the bare backbone forward",
        add_benchmark_args,
        cmd_benchmark,
    ),
    "info": (
        "print the resolved configuration and trainable parameter counts",
        add_model_args,
        cmd_info,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``iqeclip`` parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="iqeclip",
        description="IQE-CLIP zero/few-shot anomaly detection for medical images.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``iqeclip`` console script."""
    args = build_parser().parse_args(argv)
    from iqeclip.runtime import distributed

    try:
        if distributed.launched_by_torchrun():
            distributed.setup(getattr(args, "device", "auto"))
        args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
