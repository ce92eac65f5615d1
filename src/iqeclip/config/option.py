"""How an option is declared: an :class:`Option` in a dataclass field's metadata (help text,
other spellings, choices, bounds, the commands that take it, whether ``--resume`` holds it
fixed), what is derived from the declarations (:func:`fields_for`, :func:`resume_fixed`), and the
checks that every configuration runs when it is made."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iqeclip.errors import UserError, param

__all__ = [
    "FIXED_ON_RESUME",
    "Checked",
    "Option",
    "check_bounds",
    "check_types",
    "fields_for",
    "option_of",
    "resume_fixed",
]

FIXED_ON_RESUME = "fixed_on_resume"
"""The field metadata key that holds a field fixed on ``--resume`` (see :func:`resume_fixed`)."""


@dataclass(frozen=True)
class Option:
    """How a dataclass field appears on the command line.

    Attributes:
        help: the help text (``(default X)`` is appended from the field's default).
        aliases: other flag names (``epoch`` for ``epochs``, ``lr`` for ``learning_rate``).
        flag: the flag's name when it differs from the field's (``normal`` for ``normal_dir``).
        choices: allowed values.
        negation: a flag that sets the field to False (bool) or None (``no_cache``).
        nargs: ``+`` for list values; ``*`` for positional inputs.
        parse: converts the parsed strings (e.g. ``6 12 18 24`` or ``[6,12,18,24]``).
        positional: a positional argument rather than a flag.
        minimum: the smallest allowed value (``above``: values must exceed it).
        maximum: the largest allowed value (``below``: values must stay under it).
        commands: the commands that take it (None: every command with a section of its class).
        fixed_on_resume: a resumed training run must have the value the interrupted one had.
        architecture: it shapes the trainable state or the computation (:class:`ModelConfig`),
            so a checkpoint must agree on it.
    """

    help: str
    aliases: tuple[str, ...] = ()
    flag: str | None = None
    choices: tuple[str, ...] | None = None
    negation: str | None = None
    nargs: str | None = None
    parse: Callable[[Any], Any] | None = None
    positional: bool = False
    minimum: float | None = None
    above: bool = False
    maximum: float | None = None
    below: bool = False
    commands: tuple[str, ...] | None = None
    fixed_on_resume: bool = False
    architecture: bool = False

    def __post_init__(self) -> None:
        # ``above=0`` reads as a bound but sets none: refuse the declaration at import
        for flag, name, bound in (
            ("above", "minimum", self.minimum),
            ("below", "maximum", self.maximum),
        ):
            value = getattr(self, flag)
            if not isinstance(value, bool) or (value and bound is None):
                raise TypeError(
                    f"Option {self.help!r}: {flag}={value!r}; {flag}=True makes {name} exclusive"
                )

    def check(self, name: str, value: Any) -> None:
        """Raise a one-line :class:`UserError` naming the parameter if ``value`` is out of bounds
        or not finite (NaN, infinity)."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if not math.isfinite(value):  # NaN passes every comparison, inf every lower bound
            raise UserError(f"{param(name)} must be a finite number, got {value}")
        low, high = self.minimum, self.maximum
        bad = (low is not None and (value <= low if self.above else value < low)) or (
            high is not None and (value >= high if self.below else value > high)
        )
        if not bad:
            return
        if low is not None and high is not None:
            span = f"in {'(' if self.above else '['}{low:g}, {high:g}{')' if self.below else ']'}"
        elif low is not None:
            span = f"greater than {low:g}" if self.above else f"at least {low:g}"
        else:
            span = f"below {high:g}" if self.below else f"at most {high:g}"
        raise UserError(f"{param(name)} must be {span}, got {value}")

    def __call__(self, default: Any = None, **changes: Any) -> Any:
        """A dataclass field with this option and ``default`` (``changes`` adapt the option to
        the field: its help, the commands that take it, ...)."""
        option = dataclasses.replace(self, **changes) if changes else self
        metadata = {"option": option, FIXED_ON_RESUME: option.fixed_on_resume}
        if isinstance(default, list):
            return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
        return dataclasses.field(default=default, metadata=metadata)


def option_of(field: dataclasses.Field) -> Option | None:
    """The :class:`Option` of a dataclass field, or None for fields that are not options."""
    return field.metadata.get("option")


def fields_for(cls: type, command: str) -> list[dataclasses.Field]:
    """The options of the dataclass ``cls`` that ``command`` takes (:attr:`Option.commands`),
    in the order they are declared: the order of the command's ``--help``."""
    return [
        field
        for field in dataclasses.fields(cls)
        if (option := option_of(field)) is not None
        and (option.commands is None or command in option.commands)
    ]


def resume_fixed(config: Any) -> tuple[str, ...]:
    """The fields of a configuration (a dataclass or one of its instances) that must not change
    between an interrupted and a resumed run: the options declared ``fixed_on_resume``, and
    fields whose metadata says so (``setting``, which the command sets)."""
    return tuple(f.name for f in dataclasses.fields(config) if f.metadata.get(FIXED_ON_RESUME))


def check_bounds(config: Any) -> None:
    """Check every numeric option of a configuration against its declared bounds."""
    for field in dataclasses.fields(config):
        option = option_of(field)
        if option is not None:
            option.check(field.name, getattr(config, field.name))


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "None": (type(None),),
}


def _fits(value: Any, annotation: str) -> bool:
    """Whether ``value`` is one of the types of ``annotation`` (``int``, ``float``, ``str``,
    ``bool``, ``list[...]`` of them, and unions with ``None``); a float must be finite."""
    for kind in (k.strip() for k in annotation.split("|")):
        if kind.startswith("list[") and kind.endswith("]"):
            if isinstance(value, list) and all(_fits(v, kind[5:-1]) for v in value):
                return True
        elif isinstance(value, _TYPES.get(kind, ())) and (
            (kind == "bool") == isinstance(value, bool)
        ):
            return not isinstance(value, float) or math.isfinite(value)
    return False


def check_types(cls: type, data: dict[str, Any]) -> None:
    """Check stored values (a checkpoint's JSON) against the annotations of ``cls``'s fields,
    before the dataclass is made (its bounds are checked then; they skip other types).

    Raises:
        UserError: ``<field> must be <type>, got <value>`` for the first value of another type
            (a string for an int, a bool for a number, NaN for a float).
    """
    for field in dataclasses.fields(cls):
        if field.name in data and not _fits(data[field.name], str(field.type)):
            raise UserError(f"{field.name} must be {field.type}, got {data[field.name]!r}")


class Checked:
    """Mixin: a configuration dataclass whose options are checked when it is made."""

    def __post_init__(self) -> None:
        check_bounds(self)
