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


def test_numeric_bounds_checked_before_any_work(bench, tmp_path, capsys):
    import pytest

    from iqeclip.config import RunConfig
    from iqeclip.errors import UserError
    from tests.integration.conftest import output_argv, train_few_argv

    out = tmp_path / "ck"
    for flags, message in (
        (["--batch_size", "0"], "--batch_size must be at least 1, got 0"),
        (["--batch_size", "-3"], "--batch_size must be at least 1, got -3"),
        (["--learning_rate", "-1"], "--learning_rate must be greater than 0, got -1.0"),
        (["--epoch", "0"], "--epochs must be at least 1, got 0"),
        (["--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
        (["--margin", "-1"], "--margin must be at least 0, got -1"),
    ):
        err = _error([*train_few_argv(bench, 1), *flags, *output_argv(out)], capsys)
        assert message in err, (flags, err)
    assert not out.exists()  # no checkpoint, not even the folder or the log
    err = _error(
        ["calibrate", "--ckpt_path", "x.pth", "--normal", ".", "--target_fpr", "1"], capsys
    )
    assert "--target_fpr must be in [0, 1), got 1.0" in err
    with pytest.raises(UserError, match="--save_every must be at least 1"):
        RunConfig(save_every=0)  # the Python API checks the same bounds
