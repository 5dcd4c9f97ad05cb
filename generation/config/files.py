"""Run configs as YAML files: the shipped ones by name, reading one with command-line overrides, writing one.

`load_config` is the one way in: a file (or a shipped config, `--config baft`), then the command line's
overrides by dotted key (`curate.min_score`), read into the dataclasses (`coerce.py`) and checked
(`checks.py`). `dump_config` writes the resolved config next to the output, so that a run can be
reproduced and a rerun with other settings noticed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bft.generation.config import ALL_STAGES, GenerateConfig
from bft.generation.config.checks import check_config
from bft.generation.config.choices import did_you_mean
from bft.generation.config.coerce import from_dict
from bft.generation.errors import ConfigError

SHIPPED_CONFIGS = Path(__file__).parents[1] / "configs"  # baft.yaml, humpback.yaml: `--config baft`


def shipped_configs() -> list[str]:
    """The names of the shipped run configs (`baft`, `humpback`)."""
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))


def find_config(name: str) -> Path:
    """A run config: `name` as a file, else a shipped config of that name (`baft`, `humpback`)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = SHIPPED_CONFIGS / f"{name.removesuffix('.yaml')}.yaml"
    if "/" not in name and shipped.is_file():
        return shipped
    hint = did_you_mean(path.stem, shipped_configs())
    raise ConfigError(f"config {name!r}: no such file, and not a shipped config ({', '.join(shipped_configs())}){hint}")


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> GenerateConfig:
    """Read a YAML run config (optional), apply CLI overrides (dotted keys), validate."""
    data: dict[str, Any] = {}
    if path:
        path = find_config(str(path))
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML: {error}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        config = from_dict(GenerateConfig, data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}" if path else str(error)) from None
    check_config(config)
    return config


def dump_config(config: GenerateConfig, path: Path, redact: Callable[[str], str] | None = None) -> None:
    """Write the resolved config as YAML; `redact(url)` hides credentials in endpoint URLs."""
    data = config.to_dict()
    if redact is not None:
        data["endpoints"] = [redact(u) for u in data["endpoints"]]
        for stage in ALL_STAGES:
            data[stage]["endpoints"] = [redact(u) for u in data[stage]["endpoints"]]
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
