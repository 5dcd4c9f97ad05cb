"""`bft train`'s configuration: bft's dataclasses, parsed together with TRL's `SFTConfig` and `ModelConfig`.

A recipe is one YAML mapping whose keys are the fields of these four dataclasses (TRL's `TrlParser`
convention): `DataArguments` (what to train on), `BftTrainArguments` (the papers' rules TRL does not
know about), TRL's `ModelConfig` (base model, LoRA) and `SFTConfig` (optimizer, schedule, output,
push). Command-line flags (`--learning_rate 2e-5`) override the recipe. Each field's `help` is its
documentation: `bft train --help` prints them all.

The data schema is TRL's `DatasetMixtureConfig` (`datasets:` a list of `path`, `name`, `data_dir`,
`data_files`, `split`, `columns`, `fraction`; `streaming`, `test_split_size`), with three bft fields per
source: `revision` (pin a Hub release tag), `tag` (S_a / S_w for instruction/response rows) and `reverse`
(the backward model's rows). The schema is written out here rather than inherited from TRL's classes, so
that this module, and `bft train --help`, load without TRL (the `train` extra); a test checks that every
field of TRL's two classes is here with its default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from bft.generation.errors import ConfigError

TAG_NAMES = ("S_a", "S_w")


@dataclass
class DataSource:
    """One dataset of a training mixture: TRL's `DatasetConfig` fields plus bft's `revision`, `tag` and `reverse`.

    `path` is a Hub dataset id (`ORG/NAME`, with `name` the config, e.g. `sft` or `seed` of a bft release),
    a dataset folder written by `bft build`, or a local JSON-lines / Parquet file. Relative paths are
    looked up from the working directory, then from the recipe's folder.

    Rows must be TRL prompt/completion rows (what a bft build's `sft` config holds, and `bft seed
    --reversed` writes), or instruction/response pairs (a bft build's `seed`, `curated`, `rewritten` or
    `distilled` config; Humpback's curated pairs use the document as the response), which become
    conversational prompt/completion rows here:

    - `tag: S_a` or `S_w` appends Humpback's tag ("Answer in the style of an AI Assistant." /
      "Answer with knowledge from web search.") the way `bft build` does (`tag_placement`);
    - `reverse: true` makes the backward model's rows instead: the response inside P2 (the prompt
      `bft generate` sends a backward model) as the user turn, the instruction as the completion.
    """

    path: str
    name: str | None = None  # the config (`sft`, `seed`, ... of a bft build)
    data_dir: str | None = None
    data_files: str | list[str] | dict[str, str] | None = None
    split: str = "train"
    columns: list[str] | None = None  # keep only these columns
    fraction: float | None = None  # share of the mixture (see `DataArguments`)
    revision: str | None = None
    tag: str | None = None
    reverse: bool = False

    def __post_init__(self) -> None:
        if self.tag is not None and self.tag not in TAG_NAMES:
            raise ConfigError(f"dataset {self.path!r}: tag must be one of {TAG_NAMES} or unset, not {self.tag!r}")
        if self.tag and self.reverse:
            raise ConfigError(f"dataset {self.path!r}: reversed (backward-model) rows take no S_a/S_w tag")
        if self.fraction is not None and not self.fraction > 0:
            raise ConfigError(f"dataset {self.path!r}: fraction must be > 0, not {self.fraction}")

    @property
    def label(self) -> str:
        """How messages name this source: `path[name]@revision`."""
        return self.path + (f"[{self.name}]" if self.name else "") + (f"@{self.revision}" if self.revision else "")


SOURCE_KEYS = tuple(f.name for f in fields(DataSource))  # the keys a mixture's source takes


@dataclass
class DataArguments:
    """What to train on: TRL's dataset-mixture schema, or one dataset through the `dataset_*` shortcut.

    With `fraction` on every source, the mixture follows TRL's rule: fractions are normalised and each
    source gives its first `round(fraction * N)` rows, N the largest size that oversamples none.
    Without fractions the sources are concatenated. Rows are shuffled by the trainer (`seed`).
    """

    datasets: list[DataSource] = field(
        default_factory=list,
        metadata={"help": "The sources of the mixture: path, name, revision, split, fraction, tag, reverse, ..."},
    )
    streaming: bool = field(default=False, metadata={"help": "Not supported by bft train (rows are checked first)."})
    test_split_size: float | None = field(
        default=None, metadata={"help": "Share of the mixed rows held out as the eval split (e.g. 0.05)."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Shortcut for a one-dataset mixture: Hub id (ORG/NAME), bft build folder or local file."},
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Config of `dataset_name` (e.g. `sft` of a bft release)."}
    )
    dataset_revision: str | None = field(
        default=None, metadata={"help": "Revision of `dataset_name`: pin a release tag such as v1.0.0."}
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split of `dataset_name` to train on."})
    tag_placement: Literal["user_end", "system"] = field(
        default="user_end",
        metadata={
            "help": "Where S_a/S_w tags go in tagged pair rows: appended to the user turn after a blank line "
            "(`user_end`), or as a system message (`system`). Same choice as `bft build --tag-placement`."
        },
    )

    def __post_init__(self) -> None:
        for index, source in enumerate(self.datasets):
            if isinstance(source, dict):
                unknown = sorted(set(source) - set(SOURCE_KEYS))
                if unknown:
                    raise ConfigError(
                        f"datasets[{index}]: unknown key(s) {unknown}; a source takes {list(SOURCE_KEYS)}"
                    )
                if "path" not in source:
                    raise ConfigError(f"datasets[{index}]: `path` is required (Hub id, bft build folder or file)")
                self.datasets[index] = DataSource(**source)
        if self.dataset_name:
            if self.datasets:
                raise ConfigError("give either `datasets` (a mixture) or `dataset_name`, not both")
            self.datasets = [
                DataSource(
                    path=self.dataset_name,
                    name=self.dataset_config,
                    revision=self.dataset_revision,
                    split=self.dataset_train_split,
                )
            ]
        if self.streaming:
            raise ConfigError(
                "streaming: true is not supported by bft train: rows are validated before training and the "
                "papers' batch-size rule needs the number of examples"
            )


@dataclass
class BftTrainArguments:
    """The papers' training rules that TRL's `SFTConfig` does not express, and bft's run options."""

    recipe: str | None = field(
        default=None,
        metadata={"help": "Name of the recipe (backward, seed, curated, ...); printed on the model card."},
    )
    role: Literal["backward", "forward"] = field(
        default="forward",
        metadata={
            "help": "`backward`: the model writes instructions for texts (Humpback's M_yx); `forward`: it answers "
            "instructions (M_0, M_1, the final model). Decides how the model card says to prompt it."
        },
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Examples per optimizer step over all devices; gradient accumulation makes up the difference "
            "from per_device_train_batch_size. Unset: the papers' rule, 32, or 8 under 3,000 examples."
        },
    )
    dropout: float | None = field(
        default=0.1,
        metadata={
            "help": "Dropout set on every dropout field of the model config (attention_dropout for Llama; "
            "hidden/attention/residual dropouts where the architecture has them). Both papers use 0.1."
        },
    )
    resume: bool = field(
        default=True,
        metadata={"help": "Resume from the last checkpoint in output_dir when there is one (rerun the same command)."},
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Train again from the start although output_dir holds a finished model (its folder is "
            "emptied first). Without it, rerunning a finished run is a no-op that says so."
        },
    )
    merge_lora: bool = field(
        default=True,
        metadata={
            "help": "With use_peft: also save the LoRA weights merged into the base model under output_dir/merged, "
            "so `bft serve` and the Hub get a plain model."
        },
    )
    release_tag: str | None = field(
        default=None,
        metadata={
            "help": "With push_to_hub: tag the pushed commit (e.g. v1.0.0). A tag is never moved; pushing under an "
            "existing tag is refused."
        },
    )


def paper_batch_size(examples: int) -> int:
    """Humpback's rule (sec. 4.1): batch 32, or 8 when there are fewer than 3,000 training examples."""
    return 8 if examples < 3000 else 32
