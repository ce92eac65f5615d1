"""The generic layer from config dataclasses to argparse, YAML config files and back.

A command takes its options from one or more *sections*, each a config dataclass of
:mod:`iqeclip.config` (``model``, ``run``, ``predict``, ...): those options of the dataclass that
name the command (:func:`iqeclip.config.fields_for`). Every flag, in both spellings
(``--batch_size`` and ``--batch-size``), with its help, choices and default, is derived from the
field's :class:`~iqeclip.config.Option`. Flags default to "not given", so that a command knows what
was asked for explicitly: ``--config FILE`` values fill in what the command line does not say, and
the test commands override only the given model fields of the checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from iqeclip.config import fields_for, option_of
from iqeclip.errors import UserError
from iqeclip.runtime.files import load_yaml

Values = dict[str, dict[str, Any]]  # section name -> field values


@dataclass(frozen=True)
class Section:
    """A group of a command's options: the options of the dataclass ``cls`` that it takes.

    ``overrides``: the values only override a stored configuration (the model section of the
    commands that load a checkpoint), so the resolved record holds just what was given.
    ``fixed``: values the command sets itself (``setting``); ``help``: a command's own wording;
    ``defaults``: a command's own defaults where they differ from the dataclass's, shown in its
    help (an overrides section without them: "as in the checkpoint").
    """

    name: str
    cls: type
    overrides: bool = False
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    help: dict[str, str] = dataclasses.field(default_factory=dict)
    defaults: dict[str, Any] | None = None

    def shown_default(self, field: dataclasses.Field) -> str:
        """What ``--help`` says a flag defaults to in this command."""
        if self.defaults is None and self.overrides:
            return "as in the checkpoint"
        return str((self.defaults or {}).get(field.name, _default(field)))

    def fields(self, command: str) -> list[dataclasses.Field]:
        """The options of this section that ``command`` takes, in ``--help`` order."""
        return fields_for(self.cls, command)

    def resolve(self, values: dict[str, Any]) -> dict[str, Any]:
        """The section's resolved record: every field, or just the given ones for overrides."""
        if self.overrides:
            return dict(values)
        return dataclasses.asdict(self.cls(**values))


def spellings(name: str) -> list[str]:
    """Both spellings of a flag: ``--batch_size`` and ``--batch-size``."""
    return list(dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"]))


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def _converter(field: dataclasses.Field):
    kind = str(field.type).split("|")[0].strip()
    return {"int": int, "float": float}.get(kind, str)


def flag(name: str, sections: Iterable[Section]) -> str:
    """The flag of the parameter ``name`` (an option's field, as a :func:`~iqeclip.errors.param`
    names it): ``--normal`` for ``normal_dir``, else ``--<name>``."""
    for section in sections:
        for field in dataclasses.fields(section.cls):
            opt = option_of(field)
            if field.name == name and opt is not None and opt.flag:
                return f"--{opt.flag}"
    return f"--{name}"


def add_section(parser: argparse.ArgumentParser, command: str, section: Section) -> None:
    """Add the flags ``command`` takes from ``section`` to ``parser`` (one argument group)."""
    group = parser.add_argument_group(section.name)
    for field in section.fields(command):
        opt = option_of(field)
        default = _default(field)
        text = section.help.get(field.name, opt.help)
        if opt.positional:
            group.add_argument(
                field.name,
                nargs=opt.nargs,
                help=text,
                default=argparse.SUPPRESS,
                metavar=field.name.upper(),
            )
            continue
        kw: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS}
        names = spellings(opt.flag or field.name)
        names += [s for alias in opt.aliases for s in spellings(alias)]
        if isinstance(default, bool):
            kw.update(action="store_const", const=True)
        else:
            kw.update(type=_converter(field), choices=opt.choices, nargs=opt.nargs)
            text += f" (default {section.shown_default(field)})"
        group.add_argument(*names, help=text.replace("%", "%%"), **kw)
        if opt.negation:
            off = False if isinstance(default, bool) else None
            group.add_argument(
                *spellings(opt.negation),
                dest=field.name,
                action="store_const",
                const=off,
                default=argparse.SUPPRESS,
                help=f"set --{field.name} to {off}",
            )


def given(args: argparse.Namespace, command: str, sections: Iterable[Section]) -> Values:
    """The values given on the command line, per section (``parse`` hooks applied)."""
    out: Values = {}
    for section in sections:
        values = {}
        for field in section.fields(command):
            if hasattr(args, field.name):
                opt = option_of(field)
                value = getattr(args, field.name)
                values[field.name] = opt.parse(value) if opt.parse else value
        out[section.name] = values
    return out


def from_file(path: str | Path, command: str, sections: Iterable[Section]) -> Values:
    """The sections of a YAML config file (``iqeclip <command> --print_config``, a checkpoint's
    ``.yaml``). Other top-level keys (``command``, ``epoch``, ...) are ignored; an unknown key
    inside a section is an error naming it."""
    data = load_yaml(path)
    out: Values = {}
    for section in sections:
        block = data.get(section.name) or {}
        if not isinstance(block, dict):
            raise UserError(f"--config {path}: '{section.name}' must be a mapping")
        known = {f.name: f for f in dataclasses.fields(section.cls)}
        unknown = sorted(set(block) - set(known))
        if unknown:
            raise UserError(f"--config {path}: unknown {section.name} keys: {', '.join(unknown)}")
        flags = {f.name for f in section.fields(command)}
        values = {}
        for key, value in block.items():
            opt = option_of(known[key])
            if section.overrides and key not in flags:
                continue  # a full record fed to a command that only overrides some fields
            values[key] = opt.parse(value) if opt is not None and opt.parse else value
        out[section.name] = values
    return out


def merge(sections: Iterable[Section], *layers: Values) -> Values:
    """Later layers win, section by section; each section's ``fixed`` values win over all."""
    return {
        s.name: {k: v for layer in layers for k, v in layer.get(s.name, {}).items()} | s.fixed
        for s in sections
    }


def record(command: str, sections: Iterable[Section], values: Values) -> dict[str, Any]:
    """The resolved options of a run, as written by ``--print_config`` and beside results."""
    return {"command": command, **{s.name: s.resolve(values[s.name]) for s in sections}}


def dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


_NEGATIVE_LIST = re.compile(r"-\d[\d.]*(,-?\d[\d.]*)+")


def attach_negative_lists(argv: Sequence[str]) -> list[str]:
    """``--window -600,1500`` as ``--window=-600,1500``: argparse takes a value that begins with
    ``-`` and is not a plain number for a flag, so a window centred below zero (lung CT) would
    need the ``=`` form; a comma list of numbers after a flag is joined to it."""
    out: list[str] = []
    for token in argv:
        previous = out[-1] if out else ""
        if _NEGATIVE_LIST.fullmatch(token) and previous.startswith("--") and "=" not in previous:
            out[-1] = f"{previous}={token}"
        else:
            out.append(token)
    return out
