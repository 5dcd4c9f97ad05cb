"""A setting's choices are its `Literal[...]` type, checked where the settings dataclass is declared.

Every enum-like setting (`mode`, `score_mode`, `executor`, ...) is typed `Literal[...]` in
`bft.generation.config`, and that type is the one list of its choices. This module reads it back for
the three places a value comes in: the settings themselves (`Checked.__post_init__`, so code,
`dataclasses.replace` and a Ray actor's copy are checked too), the YAML reader (`coerce.py`) and the
command line (`flags.py`). All three refuse a mistyped choice with one message: the field, the value,
the choices and the closest one ("did you mean").
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal

from bft.generation.errors import ConfigError

UNIONS = (typing.Union, types.UnionType)


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`; did you mean 'X'?` for the known word closest to `word`, or "" when none is close."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def choices_of(hint: Any) -> tuple[Any, ...]:
    """The values a type's `Literal` allows: of `Literal[...]`, of a union holding one (`int | Literal["auto"] |
    None`), of a list's items (`list[StageName]`); () for a type without choices."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return typing.get_args(hint)
    if origin in UNIONS or origin is list:
        return tuple(choice for arg in typing.get_args(hint) for choice in choices_of(arg))
    return ()


def choice_error(where: str, value: Any, choices: Iterable[Any]) -> ConfigError:
    """The one message for a value outside a field's choices, e.g. `curate.score_mode: 'mean' is not one of
    ['parsed', 'expected']`, with the closest choice when one is close."""
    choices = list(choices)
    hint = did_you_mean(value, [c for c in choices if isinstance(c, str)]) if isinstance(value, str) else ""
    return ConfigError(f"{where}: {value!r} is not one of {choices}{hint}")


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's resolved field types (its annotations are strings: `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)


def fits(hint: Any, value: Any) -> bool:
    """Whether `value` is of type `hint`, a `Literal`'s choices included (an int fits `float`, a bool no number)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in UNIONS:
        return any(fits(arg, value) for arg in typing.get_args(hint))
    if origin is list:
        return isinstance(value, list) and all(fits(typing.get_args(hint)[0], item) for item in value)
    if hint is type(None):
        return value is None
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def check_choices(settings: Any) -> None:
    """Each field of dataclass `settings` whose type has choices holds one of them; else a `ConfigError` naming
    `Class.field` (or `Class.field[i]` in a list), the value and the choices."""
    hints = field_types(type(settings))
    for field in dataclasses.fields(settings):
        hint = hints[field.name]
        if not choices_of(hint):
            continue
        value = getattr(settings, field.name)
        where = f"{type(settings).__name__}.{field.name}"
        if typing.get_origin(hint) is list and isinstance(value, list):
            (item,) = typing.get_args(hint)
            values = [(f"{where}[{i}]", item, v) for i, v in enumerate(value)]
        else:
            values = [(where, hint, value)]
        for at, of, value in values:
            if not fits(of, value):
                raise choice_error(at, value, choices_of(of))


class Checked:
    """Base of the settings dataclasses: a value outside a field's choices is refused when the settings are made,
    however they are made (YAML, the command line, `dataclasses.replace`, code)."""

    def __post_init__(self) -> None:
        check_choices(self)
