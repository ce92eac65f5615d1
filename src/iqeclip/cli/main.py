"""Command line: ``iqeclip <command>`` (also ``python -m iqeclip``), a thin layer over the API.

Each command is a row of :data:`COMMANDS`: its sections of options (config dataclasses, of which
it takes the options that name it, turned into flags by :mod:`iqeclip.cli.options`) and the
function that runs it. Every command also takes ``--config FILE`` (YAML; flags on the command line
win) and ``--print_config`` (print the resolved options as YAML and exit). Problems the user can
fix are reported as one line ``error: ...`` with exit code 2, the parameters an error names
written as the command's flags. The console shows the library's log records (``-q`` only
warnings, ``-v`` debug).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iqeclip import __version__
from iqeclip.cli import options
from iqeclip.cli.checkpoints import cmd_bank, cmd_export_checkpoint, cmd_import_checkpoint
from iqeclip.cli.console import setup_logging
from iqeclip.cli.options import Section, Values
from iqeclip.config import (
    BENCH_MODEL,
    DEMO_MODEL,
    IMPORT_MODEL,
    IMPORT_READ,
    BankConfig,
    BenchmarkConfig,
    CalibrateConfig,
    DemoConfig,
    ExportCheckpointConfig,
    ExportConfig,
    ImportCheckpointConfig,
    ModelConfig,
    PredictConfig,
    ReportConfig,
    ReproduceConfig,
    RunConfig,
    ServeConfig,
    SynthConfig,
    parse_features_list,
)
from iqeclip.errors import UserError
from iqeclip.runtime import launched_by_torchrun
from iqeclip.runtime.files import save_yaml

__all__ = ["COMMANDS", "main", "parse_features_list"]

MODEL = Section("model", ModelConfig)
MODEL_OVERRIDES = Section("model", ModelConfig, overrides=True)
MOVED_WEIGHTS = Section(  # predict, serve, calibrate, export: weights that moved, the precision
    "model",
    ModelConfig,
    overrides=True,
    help={
        "pretrain": "backbone weights if they moved since training (tag or file)",
        "precision": "vision-tower dtype",
    },
)
RUN_ZERO = Section("run", RunConfig, fixed={"setting": "zero"})
RUN_FEW = Section("run", RunConfig, fixed={"setting": "few"})


@dataclass(frozen=True)
class Command:
    """One sub-command: what it says in ``--help``, its option sections and what it runs.

    ``run`` gets the merged values per section and returns the folder of its results, where
    the resolved options are recorded as ``config.yaml`` (None: nothing to record there).
    """

    help: str
    sections: tuple[Section, ...]
    run: Callable[[str, Values], Path | None]
    required: tuple[str, ...] = ()


def _run_config(command: str, values: dict[str, Any]) -> RunConfig:
    run = RunConfig(**values)
    if "obj" not in values:
        run.obj = "custom" if run.normal_dir else "Brain"
    if run.log_path is None:
        run.log_path = f"log/{command}_{run.obj}.log"
    return run


def cmd_train(command: str, values: Values) -> None:
    from iqeclip.engine.workflows import train_few, train_zero
    from iqeclip.report.run import write_test_report

    train = train_zero if command == "train-zero" else train_few
    train(ModelConfig(**values["model"]), _run_config(command, values["run"]), write_test_report)


def cmd_test(command: str, values: Values) -> Path | None:
    from iqeclip.inference.test import test

    run = _run_config(command, values["run"])
    for name in ("shot", "axis", "orientation"):
        if name not in values["run"]:
            setattr(run, name, None)  # the checkpoint's
    test(values["model"], run)
    return Path(run.report_dir) if run.report_dir else None


def cmd_info(command: str, values: Values) -> None:
    """Print the resolved configuration and parameter counts; check a weights file's shapes.

    Everything comes from the architecture's config file (no torch import, well under a second);
    only a weights file is opened, to compare its shapes with the architecture.
    """
    from iqeclip.model import architecture

    config = ModelConfig(**values["model"])
    arch = architecture.Architecture.from_name(config.model_name)
    cfg = config.resolved(arch.vision_layers, arch.text_layers)
    weights_line = describe_weights(cfg.model_name, cfg.pretrain, cfg.img_size)
    for key, value in cfg.to_dict().items():
        print(f"{key}: {value}")
    print(weights_line)
    act = architecture.activation(cfg.model_name, cfg.quick_gelu)
    note = "exact GELU, as the published runs" if act == "GELU" else "QuickGELU (--quick_gelu)"
    print(f"activation: {act} ({note})")
    frozen = architecture.backbone_parameters(cfg.model_name, cfg.img_size)
    print(f"frozen backbone parameters: {frozen}")
    print("trainable parameters per module:")
    counts = architecture.head_parameters(arch, cfg)
    for name, count in counts.items():
        print(f"  {name}: {count}")
    print(f"trainable parameters: {sum(counts.values())}")


def describe_weights(model_name: str, pretrain: str, img_size: int) -> str:
    """The ``weights:`` line of ``iqeclip info``; a file is checked against the architecture
    (keys and shapes; see :func:`iqeclip.model.backbone.check_weights_file`).

    Raises:
        UserError: if ``--pretrain`` names nothing usable or the file does not fit ``model_name``.
    """
    from iqeclip.model.architecture import RANDOM_INIT_SEED, pretrain_source

    source = pretrain_source(model_name, pretrain)
    if source == "none":
        return f"weights: none (random init, seed {RANDOM_INIT_SEED})"
    if source == "tag":
        return f"weights: open_clip tag {pretrain} (downloaded when a command builds the model)"
    from iqeclip.model.backbone import check_weights_file

    dtype = check_weights_file(model_name, pretrain, img_size)
    return f"weights: {pretrain} matches {model_name} ({dtype})"


def cmd_synth(command: str, values: Values) -> None:
    from iqeclip.data.synth import write_benchmark

    cfg = SynthConfig(**values["synth"])
    counts = write_benchmark(
        cfg.out, cfg.size, cfg.seed, cfg.image_size, cfg.overwrite, layout=cfg.layout
    )
    suffix = "_AD" if cfg.layout == "mvfa" else ""
    for name, splits in counts.items():
        print(f"{name}{suffix}: " + ", ".join(f"{split} {n}" for split, n in splits.items()))
    print(f"synthetic benchmark written to {cfg.out}")


def cmd_predict(command: str, values: Values) -> Path:
    from iqeclip.inference.predict import predict

    cfg = PredictConfig(**values["predict"])
    if not cfg.inputs:
        raise UserError("predict needs at least one INPUT (an image, folder, DICOM or NIfTI)")
    fields = dataclasses.asdict(cfg)
    predict(
        fields.pop("ckpt_path"),
        fields.pop("inputs"),
        fields.pop("out"),
        **fields,
        model_overrides=values["model"],
        applied=values["predict"],  # config.yaml records the reading in use, not None
    )
    return Path(cfg.out)


def cmd_export(command: str, values: Values) -> None:
    from iqeclip.inference.export import export_checkpoint

    cfg = ExportConfig(**values["export"])
    model, path = export_checkpoint(
        cfg.ckpt_path, cfg.out, cfg.overwrite, values["model"], cfg.format
    )
    size = model.config.img_size
    print(
        f"{cfg.ckpt_path} exported to {path}: {model.config.model_name} at {size} px, "
        f"input images (batch, 3, {size}, {size}) in [0, 1], outputs maps, score_zero, score_few"
    )


def cmd_serve(command: str, values: Values) -> None:
    from iqeclip.serve import serve

    serve(ServeConfig(**values["serve"]), values["model"])


def cmd_calibrate(command: str, values: Values) -> None:
    from iqeclip.inference.calibrate import calibrate_checkpoint

    cfg = CalibrateConfig(**values["calibrate"])
    if cfg.f1 and "target_fpr" in values["calibrate"]:
        raise UserError("--f1 and --target_fpr are two rules: give one of them")
    fields = dataclasses.asdict(cfg)
    calibrate_checkpoint(fields.pop("ckpt_path"), **fields, model_overrides=values["model"])


def cmd_report(command: str, values: Values) -> None:
    from iqeclip.report import write_reports

    cfg = ReportConfig(**values["report"])
    if len(cfg.run_dir) != 1:
        raise UserError("report needs one RUN_DIR (a folder written by test-* --report)")
    for html, md in write_reports(cfg.run_dir[0], top_k=cfg.top_k):
        print(f"report: {html} and {md}")


def cmd_reproduce(command: str, values: Values) -> None:
    from iqeclip.reproduce import run_reproduce

    sections = COMMANDS[command].sections
    record = options.record(command, sections, values)
    base = RunConfig(**values["run"])
    run_reproduce(
        ModelConfig(**values["model"]), base, ReproduceConfig(**values["reproduce"]), record
    )


def cmd_benchmark(command: str, values: Values) -> None:
    from iqeclip.apps.benchmark import run_benchmark

    run_benchmark(values["model"], BenchmarkConfig(**values["benchmark"]))


def cmd_demo(command: str, values: Values) -> Path:
    from iqeclip.apps.demo import run_demo

    cfg = DemoConfig(**values["demo"])
    run_demo(values["model"], cfg)
    return Path(cfg.out)


COMMANDS: dict[str, Command] = {
    "train-zero": Command(
        "zero-shot training: leave the target out, train on the other datasets",
        (MODEL, RUN_ZERO),
        cmd_train,
    ),
    "train-few": Command(
        "few-shot training on K abnormal + K normal images of the target",
        (MODEL, RUN_FEW),
        cmd_train,
    ),
    "test-zero": Command(
        "evaluate a zero-shot checkpoint on the target's test split",
        (MODEL_OVERRIDES, RUN_ZERO),
        cmd_test,
        required=("ckpt_path",),
    ),
    "test-few": Command(
        "evaluate a few-shot checkpoint on the target's test split",
        (MODEL_OVERRIDES, RUN_FEW),
        cmd_test,
        required=("ckpt_path",),
    ),
    "synth": Command(
        "write the synthetic BMAD-layout benchmark",
        (Section("synth", SynthConfig),),
        cmd_synth,
        required=("out",),
    ),
    "demo": Command(
        "train and test zero- and 4-shot on the synthetic benchmark (defaults: iqe-tiny, "
        "random init, 128 px)",
        (
            Section(
                "model",
                ModelConfig,
                overrides=True,
                defaults=DEMO_MODEL,
                help={
                    "model_name": "open_clip architecture; with another than iqe-tiny the paper's "
                    "--pretrain openai and --img_size 240 apply unless given"
                },
            ),
            Section("demo", DemoConfig),
        ),
        cmd_demo,
    ),
    "reproduce": Command(
        "the paper's result grid: every target x setting x draw, resumable, with tables",
        (MODEL, Section("reproduce", ReproduceConfig), RUN_ZERO),
        cmd_reproduce,
    ),
    "predict": Command(
        "score your own images, DICOM series and NIfTI, NRRD and MetaImage volumes with a checkpoint",
        (MOVED_WEIGHTS, Section("predict", PredictConfig)),
        cmd_predict,
        required=("out",),
    ),
    "export": Command(
        "export a checkpoint's whole scoring path as one ONNX graph (iqeclip[export])",
        (MOVED_WEIGHTS, Section("export", ExportConfig)),
        cmd_export,
        required=("ckpt_path", "out"),
    ),
    "bank": Command(
        "add a memory of your normal images to a zero-shot checkpoint (docs/model.md)",
        (Section("bank", BankConfig),),
        cmd_bank,
        required=("ckpt_path", "out"),
    ),
    "import-checkpoint": Command(
        "convert a checkpoint of the published IQE-CLIP code into an iqeclip checkpoint",
        (
            Section(
                "model",
                ModelConfig,
                overrides=True,
                defaults={
                    **IMPORT_MODEL,
                    **dict.fromkeys(IMPORT_READ, "read off the tensors"),
                },
                help={
                    "use_global": "the file was trained with the conditioning on: its published "
                    "training command did NOT pass --use_global (default off: every README "
                    "command passes it, and there it turned the conditioning off)"
                },
            ),
            Section("import", ImportCheckpointConfig),
        ),
        cmd_import_checkpoint,
        required=("out",),
    ),
    "export-checkpoint": Command(
        "write an iqeclip checkpoint in the published code's layout (--format published)",
        (Section("export-checkpoint", ExportCheckpointConfig),),
        cmd_export_checkpoint,
        required=("ckpt_path", "out"),
    ),
    "serve": Command(
        "a local web viewer and JSON API over predict (iqeclip[serve]; docs/serve.md)",
        (MOVED_WEIGHTS, Section("serve", ServeConfig)),
        cmd_serve,
    ),
    "calibrate": Command(
        "choose decision thresholds and store them in the checkpoint",
        (MOVED_WEIGHTS, Section("calibrate", CalibrateConfig)),
        cmd_calibrate,
        required=("ckpt_path",),
    ),
    "report": Command(
        "HTML and markdown report of a test run folder",
        (Section("report", ReportConfig),),
        cmd_report,
    ),
    "benchmark": Command(
        "measure inference and training speed as ratios to the bare backbone forward "
        "(defaults: ViT-B-16, random init, 240 px)",
        (
            Section("model", ModelConfig, overrides=True, defaults=BENCH_MODEL),
            Section("benchmark", BenchmarkConfig),
        ),
        cmd_benchmark,
    ),
    "info": Command(
        "print the resolved configuration and trainable parameter counts; check a weights file",
        (MODEL,),
        cmd_info,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``iqeclip`` parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="iqeclip",
        description="IQE-CLIP zero/few-shot anomaly detection for medical images.",
    )
    parser.add_argument("--version", action="version", version=f"iqeclip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        for section in command.sections:
            options.add_section(p, name, section)
        g = p.add_argument_group("options of every command")
        g.add_argument(
            *options.spellings("config"),
            dest="config",
            default=None,
            help="read the options from this YAML file (flags given here win)",
        )
        g.add_argument(
            *options.spellings("print_config"),
            dest="print_config",
            action="store_true",
            help="print the resolved options as YAML and exit",
        )
        g.add_argument(
            "-q",
            "--quiet",
            dest="verbosity",
            action="store_const",
            const=-1,
            default=0,
            help="show only warnings and errors",
        )
        g.add_argument(
            "-v",
            "--verbose",
            dest="verbosity",
            action="store_const",
            const=1,
            help="show debug messages too",
        )
    return parser


def resolve(name: str, args: argparse.Namespace) -> Values:
    """The values of a command: its ``--config`` file, then the flags given, then checks."""
    command = COMMANDS[name]
    layers = [options.given(args, name, command.sections)]
    if args.config:
        layers.insert(0, options.from_file(args.config, name, command.sections))
    values = options.merge(command.sections, *layers)
    for key in command.required:
        if not any(values[s.name].get(key) for s in command.sections):
            raise UserError(f"--{key} is required")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``iqeclip`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(options.attach_negative_lists(argv))
    handler = setup_logging(args.verbosity)
    distributed = None  # imported (with torch) only under torchrun, once the options are good
    try:
        values = resolve(args.command, args)
        command = COMMANDS[args.command]
        resolved = options.record(args.command, command.sections, values)
        if args.print_config:
            print(options.dump(resolved), end="")
            return 0
        if launched_by_torchrun():
            from iqeclip.runtime import distributed

            distributed.setup(next((v["device"] for v in values.values() if "device" in v), "auto"))
        folder = command.run(args.command, values)
        if folder is not None and (distributed is None or distributed.is_main()):
            resolved = options.record(args.command, command.sections, values)  # as applied
            save_yaml(resolved, folder / "config.yaml")
    except UserError as exc:
        sections = COMMANDS[args.command].sections
        print(f"error: {exc.render(lambda name: options.flag(name, sections))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if distributed is not None:
            distributed.teardown()
        logging.getLogger("iqeclip").removeHandler(handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
