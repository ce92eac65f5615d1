"""Command line basics: info, flag spellings, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from iqeclip.cli.main import main, parse_features_list
from iqeclip.errors import UserError

PAPER_INFO = [
    "info",
    "--model_name",
    "ViT-L-14-336",
    "--pretrain",
    "none",
    "--img_size",
    "240",
    "--features_list",
    "6",
    "12",
    "18",
    "24",
    "--prompt_len",
    "2",
    "--deep_prompt_len",
    "1",
    "--total_d_layer_len",
    "11",
    "--use_global",
]


def test_info_prints_the_paper_parameter_count(capsys):
    assert main(PAPER_INFO) == 0
    out = capsys.readouterr().out.splitlines()
    assert "trainable parameters: 51017489" in out
    assert "activation: GELU (exact GELU, as the published runs)" in out
    assert "  iqm: 47264256" in out and "  projections: 3148800" in out
    assert "features_list: [6, 12, 18, 24]" in out


def test_dash_spellings_and_bracket_list_are_equivalent(capsys):
    main(PAPER_INFO)
    underscored = capsys.readouterr().out
    dashed = [a.replace("_", "-") if a.startswith("--") else a for a in PAPER_INFO]
    dashed[dashed.index("--features-list") + 1 : dashed.index("--features-list") + 5] = [
        "[6,12,18,24]"
    ]
    main(dashed)
    assert capsys.readouterr().out == underscored


def test_quick_gelu_and_no_use_global(capsys):
    main(
        [
            "info",
            "--model_name",
            "iqe-tiny",
            "--pretrain",
            "none",
            "--quick_gelu",
            "--no_use_global",
        ]
    )
    out = capsys.readouterr().out
    assert "activation: QuickGELU" in out and "use_global: False" in out


@pytest.mark.parametrize(
    "tokens",
    [["6", "12", "18", "24"], ["[6,12,18,24]"], ["6,12,18,24"], ["[6,", "12,", "18,", "24]"]],
)
def test_features_list_forms(tokens):
    assert parse_features_list(tokens) == [6, 12, 18, 24]


def test_features_list_garbage():
    with pytest.raises(UserError, match=r"^features_list expects block numbers"):
        parse_features_list(["six"])


def test_errors_are_one_line_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "iqeclip", "info", "--model_name", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: --model_name 'nope'")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["predict", "--help"],
        ["no-such-command"],
        ["predict", "--batch_size", "0", "scan.png", "--out", "out"],
    ],
    ids=["help", "version", "command-help", "unknown-command", "bad-value"],
)
def test_help_version_and_argument_errors_import_nothing_heavy(argv):
    """They answer before torch, open_clip or numpy are imported (start-up, docs/performance.md)."""
    code = (
        "import sys\nfrom iqeclip.cli.main import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n    pass\n"
        "print([m for m in ('torch', 'open_clip', 'numpy', 'PIL') if m in sys.modules])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr


def _help_default(command: str, flag: str, capsys) -> str:
    """The "(default ...)" of ``--flag`` in ``iqeclip COMMAND --help``."""
    import re

    with pytest.raises(SystemExit):
        main([command, "--help"])
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  --{flag} "))
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith(" " * 10)), len(lines)
    )
    found = re.search(r"\(default ([^)]*)\)", " ".join(" ".join(lines[start:end]).split()))
    assert found, (command, flag)
    return found.group(1)


def test_each_commands_help_shows_its_own_model_defaults(capsys):
    from iqeclip.config import BENCH_MODEL, DEMO_MODEL, ModelConfig

    paper = ModelConfig()
    expected = {
        "demo": DEMO_MODEL,
        "benchmark": BENCH_MODEL,
        "info": {k: getattr(paper, k) for k in ("model_name", "pretrain", "img_size")},
    }
    for command, defaults in expected.items():
        for flag, value in defaults.items():
            assert _help_default(command, flag, capsys) == str(value), (command, flag)
    assert DEMO_MODEL == {"model_name": "iqe-tiny", "pretrain": "none", "img_size": 128}
    for command in ("test-few", "test-zero", "predict", "calibrate"):
        assert _help_default(command, "pretrain", capsys) == "as in the checkpoint", command


def test_a_window_below_zero_is_taken_without_an_equals_sign(capsys):
    """``--window -600,1500`` (a lung window) as argparse alone would refuse it; a flag or a
    plain negative number after a flag is left as it is."""
    from iqeclip.cli.main import main
    from iqeclip.cli.options import attach_negative_lists

    argv = ["predict", "--ckpt_path", "x.pth", "a.png", "--out", "o", "--print_config"]
    assert main([*argv, "--window", "-600,1500"]) == 0
    assert "window: -600,1500" in capsys.readouterr().out
    assert attach_negative_lists(["--window", "-600,1500", "-q"]) == ["--window=-600,1500", "-q"]
    assert attach_negative_lists(["--seed", "-3", "--window=-1,2"]) == [
        "--seed",
        "-3",
        "--window=-1,2",
    ]
    assert attach_negative_lists(["a.png", "-600,1500"]) == ["a.png", "-600,1500"]
