"""How far apart two datasets' responses lie in a language model's embedding space: MAUVE, as BAFT Table 3.

BAFT compares rewritten and distilled responses (and raw documents) with MAUVE (Pillutla et al. 2021) on
GPT-2 features, 10K texts against 10K: distilled vs distilled 0.960, distilled vs rewritten 0.340,
distilled vs raw Dolma 0.034. bft computes it the same way, with the `mauve-text` package on features it
extracts itself, so it works offline:

- **features**: each text's final hidden state at its last token (what `mauve-text` does with GPT-2),
  from a local model: `embedded` (the SmolLM2 checkpoint `bft generate` runs by default) or any model id
  or path `transformers` can load; texts are cut to `max_tokens` tokens;
- **sample**: `size` texts of each side, picked by a hash of their id (the same rows on every run);
- **score**: `mauve.compute_mauve` on the two feature sets (PCA, k-means into `min(n)/10` buckets, the
  divergence curve's area) with `seed` fixed. 1 means the two samples fill the space alike; values near
  0 mean they lie apart. Small samples make it noisy: compare figures measured at equal sizes. (Two
  exactly equal histograms, as from one set compared with itself, give 0.75 or 1: `mauve-text` sorts the
  divergence curve's tied points in no fixed order.)

Which model, sizes and seed were used is part of the result, so a report names how it was computed.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

from bft.builders.report import dataset_rows, sample_by_id
from bft.generation.endpoints.embedded import EMBEDDED_NAME, converted_checkpoint
from bft.generation.errors import ConfigError

EMBEDDED = "embedded"


@dataclass
class Comparison:
    """One MAUVE figure and how it was computed."""

    p: str  # what was compared: `config` or `FOLDER:config`
    q: str
    mauve: float
    p_rows: int
    q_rows: int
    features_model: str
    max_tokens: int
    buckets: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


@functools.cache
def features_model(model: str):
    """(tokenizer, encoder) of `model`, loaded once per process."""
    import torch  # heavy: loaded only when a comparison is asked for
    from transformers import AutoModel, AutoTokenizer

    where = str(converted_checkpoint()) if model == EMBEDDED else model
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        encoder = AutoModel.from_pretrained(where, dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise ConfigError(f"features model {model}: cannot be loaded ({str(error).splitlines()[0]})") from None
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, encoder.eval()


def text_features(texts: list[str], model: str = EMBEDDED, max_tokens: int = 256, batch_size: int = 8):
    """A (len(texts), hidden) float32 array: each text's last-token hidden state (module docstring)."""
    import numpy as np
    import torch

    tokenizer, encoder = features_model(model)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                [t or " " for t in texts[start : start + batch_size]],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_tokens,
            )
            hidden = encoder(**batch).last_hidden_state
            last = batch["attention_mask"].sum(dim=1) - 1
            rows.append(hidden[torch.arange(hidden.shape[0]), last].float().numpy())
    return np.concatenate(rows).astype("float32")


def mauve_between(
    p_name: str,
    p_rows: list[dict],
    q_name: str,
    q_rows: list[dict],
    features_model: str = EMBEDDED,
    size: int = 1000,
    seed: int = 25,
    max_tokens: int = 256,
    field: str = "response",
) -> Comparison:
    """MAUVE between the `field` texts of two row lists, `size` of each at most (module docstring)."""
    import mauve  # `pip install bft[eval]`: mauve-text and faiss-cpu

    p_texts = [r[field] for r in sample_by_id([r for r in p_rows if r.get(field)], size)]
    q_texts = [r[field] for r in sample_by_id([r for r in q_rows if r.get(field)], size)]
    for name, texts in ((p_name, p_texts), (q_name, q_texts)):
        if len(texts) < 2:
            raise ConfigError(f"MAUVE: {name} has {len(texts)} rows with a {field}; at least 2 are needed")
    p_features = text_features(p_texts, features_model, max_tokens)
    q_features = text_features(q_texts, features_model, max_tokens)
    buckets = max(2, round(min(len(p_texts), len(q_texts)) / 10))
    result = mauve.compute_mauve(
        p_features=p_features, q_features=q_features, num_buckets=buckets, seed=seed, verbose=False
    )
    model_name = EMBEDDED_NAME if features_model == EMBEDDED else features_model
    return Comparison(
        p_name, q_name, round(float(result.mauve), 4), len(p_texts), len(q_texts), model_name, max_tokens, buckets, seed
    )


def side_rows(spec: str, rows_by_config: dict[str, list[dict]]) -> list[dict]:
    """The rows `spec` names: `config` of the report's own folder, or `FOLDER:config` of another output."""
    folder, separator, config = spec.rpartition(":")
    rows = dataset_rows(Path(folder)) if separator else rows_by_config
    if config not in rows:
        where = folder if separator else "the report's folder"
        raise ConfigError(f"--mauve {spec}: {where} has no config {config!r} (it has: {', '.join(sorted(rows))})")
    return rows[config]


def shown(spec: str) -> str:
    """How a side is named in reports and cards: `config`, or `FOLDERNAME:config` (no local path)."""
    folder, separator, config = spec.rpartition(":")
    return f"{Path(folder).name}:{config}" if separator else config


def compare_configs(
    pairs: list[str], rows_by_config: dict[str, list[dict]], features_model: str = EMBEDDED, size: int = 1000,
    seed: int = 25,
) -> list[Comparison]:  # fmt: skip
    """One `Comparison` per `A,B` of `pairs` (each side as `side_rows` reads it)."""
    comparisons = []
    for pair in pairs:
        sides = [side.strip() for side in pair.split(",")]
        if len(sides) != 2 or not all(sides):
            raise ConfigError(f"--mauve {pair!r}: expected two configs, A,B (each CONFIG or FOLDER:CONFIG)")
        (p, q) = sides
        p_rows, q_rows = side_rows(p, rows_by_config), side_rows(q, rows_by_config)
        comparisons.append(mauve_between(shown(p), p_rows, shown(q), q_rows, features_model, size, seed))
    return comparisons
