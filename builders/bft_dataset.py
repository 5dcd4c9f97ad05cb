"""A `datasets` builder over a `bft generate` output folder.

Configs (each built only when its input exists):

- `backtranslated`: every candidate pair (a document with its backtranslated instruction), with the
  curation outcome: `score`, `expected_score`, `status` (`kept` / `rejected` by curation, or
  `not_curated`) and the curation `reason`;
- `curated`: the pairs that passed curation;
- `rewritten`: the method's dataset, instruction + rewritten response;
- `distilled`: responses distilled from a teacher, when the output folder has them;
- `seed`: the seed set (`seed_file`, JSON lines with `instruction` and `response`);
- `sft`: TRL's conversational prompt/completion rows for the final fine-tune: the seed tagged S_a
  ("Answer in the style of an AI Assistant.") and the web pairs of `sft_source` tagged S_w ("Answer
  with knowledge from web search."). Where the tag goes is not stated in the papers (method.md,
  open points): `tag_placement: user_end` (default) appends it to the user turn after a blank line;
  `system` makes it a system message (Humpback calls the tags "system prompts").

`test_fraction` > 0 adds a `test` split: a document goes to it when a hash of its id falls under the
fraction, so the split is stable across rebuilds and versions.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from bft.generation.layout import config_file, read_rows
from bft.generation.method.tags import sft_row
from bft.generation.records import RECORD_SCHEMA
from bft.generation.text import stable_hash64

WEB_CONFIGS = ("backtranslated", "curated", "rewritten", "distilled")
ALL_CONFIGS = (*WEB_CONFIGS, "seed", "sft")

BUILDER_VERSION = datasets.Version("1.0.0")  # the layout of the configs below
RECORD_FEATURES = datasets.Features.from_arrow_schema(RECORD_SCHEMA)
MESSAGE = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
SEED_FEATURES = datasets.Features(
    {"id": datasets.Value("string"), "instruction": datasets.Value("string"), "response": datasets.Value("string")}
)
SFT_FEATURES = datasets.Features(
    {"id": datasets.Value("string"), "tag": datasets.Value("string"), "prompt": MESSAGE, "completion": MESSAGE}
)


def in_test_split(doc_id: str, fraction: float) -> bool:
    return stable_hash64(doc_id) / 2**64 < fraction


def read_seed(path: Path) -> list[dict]:
    """Seed pairs from JSON lines (`instruction`, `response`, optional `id`)."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if (
                not isinstance(row, dict)
                or not isinstance(row.get("instruction"), str)
                or not isinstance(row.get("response"), str)
            ):
                raise ValueError(f"{path}:{number}: a seed line needs string fields 'instruction' and 'response'")
            rows.append(
                {
                    "id": str(row.get("id") or f"seed-{number}"),
                    "instruction": row["instruction"],
                    "response": row["response"],
                }
            )
    return rows


class BftConfig(datasets.BuilderConfig):
    """One config of a bft dataset, with the inputs it is built from."""

    def __init__(
        self,
        seed_file: str | None = None,
        sft_source: str = "rewritten",
        test_fraction: float = 0.0,
        tag_placement: str = "user_end",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tag_placement = tag_placement
        self.seed_file = seed_file
        self.sft_source = sft_source
        self.test_fraction = test_fraction


class BftDataset(datasets.GeneratorBasedBuilder):
    """Instruction back-and-forth translation data, from a `bft generate` output folder (`data_dir`)."""

    VERSION = BUILDER_VERSION
    BUILDER_CONFIG_CLASS = BftConfig
    BUILDER_CONFIGS = [BftConfig(name=name, version=BUILDER_VERSION) for name in ALL_CONFIGS]
    DEFAULT_CONFIG_NAME = "rewritten"

    def _info(self) -> datasets.DatasetInfo:
        features = {"seed": SEED_FEATURES, "sft": SFT_FEATURES}.get(self.config.name, RECORD_FEATURES)
        return datasets.DatasetInfo(
            description=__doc__.split("\n\n")[0],
            features=features,
            citation="arXiv:2308.06259; arXiv:2408.04614",
        )

    def _split_generators(self, dl_manager):
        splits = [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"split": "train"})]
        if self.config.test_fraction > 0:
            splits.append(datasets.SplitGenerator(name=datasets.Split.TEST, gen_kwargs={"split": "test"}))
        return splits

    def _keep(self, doc_id: str, split: str) -> bool:
        fraction = self.config.test_fraction
        return fraction <= 0 or in_test_split(doc_id, fraction) == (split == "test")

    def _generate_examples(self, split: str):
        name, output = self.config.name, Path(self.config.data_dir)
        if name == "seed":
            rows = ((r["id"], r) for r in read_seed(Path(self.config.seed_file)))
        elif name == "sft":
            rows = self._sft_rows(output)
        elif name == "backtranslated":
            rows = self._candidates(output)
        else:
            rows = ((r["id"], r) for r in read_rows(config_file(output, name)))
        for key, row in rows:
            if self._keep(row["id"], split):
                yield key, row

    def _candidates(self, output: Path):
        """Backtranslated pairs with their curation outcome joined in."""
        outcome: dict[str, tuple] = {}
        curated = config_file(output, "curated")
        if curated is not None:
            for row in read_rows(curated):
                outcome[row["id"]] = ("kept", None, row["score"], row["expected_score"])
            for row in read_rows(config_file(output, "rejected")):
                if row["stage"] == "curate":
                    outcome[row["id"]] = ("rejected", row["reason"], row["score"], row["expected_score"])
        for row in read_rows(config_file(output, "backtranslated")):
            status, reason, score, expected = outcome.get(row["id"], ("not_curated", None, None, None))
            yield row["id"], {**row, "status": status, "reason": reason, "score": score, "expected_score": expected}

    def _sft_rows(self, output: Path):
        placement = self.config.tag_placement
        if self.config.seed_file:
            for row in read_seed(Path(self.config.seed_file)):
                yield f"S_a/{row['id']}", sft_row(row["id"], "S_a", row["instruction"], row["response"], placement)
        for row in read_rows(config_file(output, self.config.sft_source)):
            yield f"S_w/{row['id']}", sft_row(row["id"], "S_w", row["instruction"], row["response"], placement)


def available_configs(output_dir: Path, seed_file: str | None) -> list[str]:
    """The configs a build of `output_dir` can make."""
    names = [n for n in WEB_CONFIGS if config_file(output_dir, n) is not None]
    if seed_file:
        names.append("seed")
    if names:
        names.append("sft")
    return names
