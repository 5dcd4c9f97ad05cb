"""Nested mappings (a YAML file, a Ray actor's copy) into the settings dataclasses, checking keys and types.

An unknown key and a value of the wrong type are `ConfigError`s that name the key by its dotted path
(`curate.min_score: expected float, got 'high'`); a value outside a `Literal` field's choices gets the
message of `choices.py`. A single string where a list is expected is taken as a one-item list.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from bft.generation.config.choices import UNIONS, choice_error, field_types
from bft.generation.errors import ConfigError


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from nested dicts; unknown keys and wrong types raise `ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; known: {sorted(fields)}")
    values = {}
    for name, value in data.items():
        values[name] = coerce(hints[name], value, f"{where}.{name}" if where else name)
    return cls(**values)


def coerce(hint: Any, value: Any, where: str) -> Any:
    """`value` as type `hint` (an int where a float goes becomes a float), or a `ConfigError` naming `where`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in UNIONS:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:  # the first type the value fits (`int | Literal["auto"]`)
            try:
                return coerce(option, value, where)
            except ConfigError:
                continue
        return coerce(inner[-1], value, where)
    if origin is Literal:
        if value not in args:
            raise choice_error(where, value, args)
        return value
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
