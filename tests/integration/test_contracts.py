"""The contract between commands (issue 13): a test names the protocol that produced its numbers,
predict checks its inputs before the first batch, outputs are checked before any work, no user file
is overwritten, and calibrations are kept."""

from __future__ import annotations

import json

from iqeclip.cli.main import main
from tests.integration.conftest import few_shot_eval_argv


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_test_runs_the_checkpoints_protocol(bench, checkpoint, tmp_path, capsys):
    argv = few_shot_eval_argv(bench, checkpoint)  # --shot 2, as trained
    log = ["--log_path", str(tmp_path / "log")]
    err = _error([*argv[:-4], "--shot", "4", "--ckpt_path", str(checkpoint), *log], capsys)
    assert "--shot 4:" in err and "was trained 2-shot" in err
    no_shot = ["test-few", "--data_path", str(bench), "--ckpt_path", str(checkpoint), *log]
    metrics = tmp_path / "m.json"
    assert main([*no_shot, "--metrics_json", str(metrics)]) == 0
    assert json.loads(metrics.read_text())["shot"] == 2  # the checkpoint's
    capsys.readouterr()
    err = _error(["test-zero", *no_shot[1:]], capsys)
    assert "was trained few-shot (2-shot): test it with test-few, not test-zero" in err
