"""Command line: ``iqeclip <command>`` (also ``python -m iqeclip``), a thin layer over the API.

Every flag exists in both spellings (``--batch_size`` and ``--batch-size``). Problems the user can
fix are reported as one line ``error: ...`` with exit code 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence

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
    """Flags that define the detector (see :class:`~iqeclip.config.ModelConfig`)."""
    d = ModelConfig()
    g = parser.add_argument_group("model")
    g.add_argument(
        *flag("model_name"),
        dest="model_name",
        default=d.model_name,
        help="open_clip architecture (default %(default)s; iqe-tiny for tests)",
    )
    g.add_argument(
        *flag("pretrain"),
        dest="pretrain",
        default=d.pretrain,
        help="none | an open_clip tag such as openai | a weights file "
        "(OpenAI TorchScript .pt, state dict, safetensors) (default %(default)s)",
    )
    g.add_argument(
        *flag("img_size"),
        dest="img_size",
        type=int,
        default=d.img_size,
        help="input side in pixels (default %(default)s)",
    )
    g.add_argument(
        *flag("features_list"),
        dest="features_list",
        nargs="+",
        default=None,
        help="1-based tapped blocks, '6 12 18 24' or '[6,12,18,24]' (default: quartiles)",
    )
    g.add_argument(
        *flag("prompt_len"),
        dest="prompt_len",
        type=int,
        default=d.prompt_len,
        help="class-based prompting tokens (default %(default)s)",
    )
    g.add_argument(
        *flag("deep_prompt_len"),
        dest="deep_prompt_len",
        type=int,
        default=d.deep_prompt_len,
        help="learnable text prompt slots (default %(default)s)",
    )
    g.add_argument(
        *flag("total_d_layer_len"),
        dest="total_d_layer_len",
        type=int,
        default=None,
        help="deep text prompt layers: 0 or text layers - 1 (default)",
    )
    g.add_argument(
        *flag("use_global"),
        dest="use_global",
        action="store_true",
        default=True,
        help="condition class tokens and IQM queries on the global image embedding "
        "(default on; the published scripts inverted this flag)",
    )
    g.add_argument(
        *flag("no_use_global"),
        dest="use_global",
        action="store_false",
        help="image-independent class tokens and queries",
    )
    g.add_argument(
        *flag("quick_gelu"),
        dest="quick_gelu",
        action="store_true",
        help="build the backbone with QuickGELU, the activation OpenAI trained with "
        "(off: exact GELU, as the published runs)",
    )
    g.add_argument(
        *flag("normalize"),
        dest="normalize",
        choices=["none", "clip"],
        default="none",
        help="input normalisation: none (pixels in [0,1], as the paper) or clip mean/std",
    )
    g.add_argument(
        *flag("iqm_layers"),
        dest="iqm_layers",
        type=int,
        default=d.iqm_layers,
        help="IQM depth (default %(default)s)",
    )
    g.add_argument(
        *flag("iqm_heads"),
        dest="iqm_heads",
        type=int,
        default=d.iqm_heads,
        help="IQM attention heads (default %(default)s)",
    )
    g.add_argument(
        *flag("dropout"),
        dest="dropout",
        type=float,
        default=d.dropout,
        help="IQM dropout while training (default %(default)s, the published computation)",
    )


def model_config_from_args(args: argparse.Namespace) -> ModelConfig:
    """The :class:`ModelConfig` named by the parsed flags (not yet resolved)."""
    return ModelConfig(
        model_name=args.model_name,
        pretrain=args.pretrain,
        img_size=args.img_size,
        features_list=parse_features_list(args.features_list),
        prompt_len=args.prompt_len,
        deep_prompt_len=args.deep_prompt_len,
        total_d_layer_len=args.total_d_layer_len,
        use_global=args.use_global,
        quick_gelu=args.quick_gelu,
        normalize=args.normalize,
        iqm_layers=args.iqm_layers,
        iqm_heads=args.iqm_heads,
        dropout=args.dropout,
    )


def cmd_info(args: argparse.Namespace) -> None:
    """Print the resolved configuration and trainable parameters (no weights are loaded)."""
    from iqeclip.model import IQEClip

    model = IQEClip.build(model_config_from_args(args), device="meta")
    for key, value in model.config.to_dict().items():
        print(f"{key}: {value}")
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


COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], None]]
] = {
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
    try:
        args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
