"""AlpacaEval's file formats, read and written, so bft's results and AlpacaEval's move both ways.

- `model_outputs.json`: a JSON list of `{"instruction", "output", "generator", "dataset"}` records (what
  `alpaca_eval --model_outputs` reads);
- `annotations.json`: a JSON list of pairwise records `{"instruction", "output_1", "generator_1",
  "output_2", "generator_2", "annotator", "preference"}` with `output_1` the reference and `output_2` the
  model, `preference` 1 (reference preferred), 2 (model preferred) or 1.5 (tie), as AlpacaEval writes them.

Records are joined by instruction text, as AlpacaEval joins them.
"""

from __future__ import annotations

import json
from pathlib import Path

from bft.generation.errors import ConfigError

OUTPUT_KEYS = ("instruction", "output", "generator", "dataset")
ANNOTATION_KEYS = ("instruction", "output_1", "generator_1", "output_2", "generator_2", "annotator", "preference")


def read_json_list(path: Path, what: str) -> list[dict]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{what} {path}: not valid JSON ({error})") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ConfigError(f"{what} {path}: expected a JSON list of records (AlpacaEval's format)")
    return data


def read_model_outputs(path: Path) -> list[dict]:
    """AlpacaEval model outputs; every record needs a text `instruction` and `output`, instructions unique."""
    records = read_json_list(path, "model outputs")
    if not records:
        raise ConfigError(f"model outputs {path}: the list is empty; there is nothing to judge")
    seen = set()
    for index, record in enumerate(records):
        for key in ("instruction", "output"):
            if not isinstance(record.get(key), str):
                raise ConfigError(f"model outputs {path}: record {index} has no text `{key}`")
        if not record["output"].strip():
            raise ConfigError(
                f"model outputs {path}: record {index} ({record['instruction'][:60]!r}) has an empty `output`; "
                "a judge would compare nothing with the reference"
            )
        if record["instruction"] in seen:
            raise ConfigError(f"model outputs {path}: record {index} repeats the instruction {record['instruction']!r}")
        seen.add(record["instruction"])
    return records


def write_json_list(path: Path, records: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_annotations(path: Path) -> list[dict]:
    """AlpacaEval annotations; each record needs a `preference` key (null allowed: dropped when counted)."""
    records = read_json_list(path, "annotations")
    if not records:
        raise ConfigError(f"annotations {path}: the list is empty; there is no win rate to compute")
    for index, record in enumerate(records):
        if "preference" not in record:
            raise ConfigError(f"annotations {path}: record {index} has no `preference`")
    return records
