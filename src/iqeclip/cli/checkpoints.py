"""The commands that make checkpoints from others: ``bank`` (a memory of normal images),
``import-checkpoint`` and ``export-checkpoint`` (the published code's layout)."""

from __future__ import annotations

import dataclasses

from iqeclip.cli.options import Values
from iqeclip.config import BankConfig, ExportCheckpointConfig, ImportCheckpointConfig

__all__ = ["cmd_bank", "cmd_export_checkpoint", "cmd_import_checkpoint"]


def cmd_import_checkpoint(command: str, values: Values) -> None:
    from iqeclip.apps.published import import_checkpoint, summary

    cfg = ImportCheckpointConfig(**values["import"])
    given = {"obj": cfg.obj, "setting": cfg.setting, "shot": cfg.shot, "overwrite": cfg.overwrite}
    out, imported = import_checkpoint(cfg.source, cfg.out, values["model"], **given)
    print("\n".join(summary(cfg.source, out, imported)))


def cmd_bank(command: str, values: Values) -> None:
    from iqeclip.inference.bank import build_bank

    cfg = BankConfig(**values["bank"])
    fields = dataclasses.asdict(cfg)
    out, record = build_bank(
        fields.pop("ckpt_path"), fields.pop("out"), weight=fields.pop("bank_weight"), **fields
    )
    print(
        f"bank of {len(record['images'])} normal images ({record['sizes'][0]} patches per "
        f"level) written to {out}; run iqeclip calibrate on it before predicting decisions"
    )


def cmd_export_checkpoint(command: str, values: Values) -> None:
    from iqeclip.apps.published import export_published

    cfg = ExportCheckpointConfig(**values["export-checkpoint"])
    out, block = export_published(cfg.ckpt_path, cfg.out, cfg.overwrite, cfg.text_block)
    print(f"{cfg.ckpt_path} written to {out} in the published layout (IQM text block {block!r})")
