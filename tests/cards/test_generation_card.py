"""The generation card: facts in, text out (the run's tables are handed over, nothing is looked up)."""

import yaml

from bft.cards.common import BUILT_CONFIGS_ABOUT, CONFIGS_ABOUT
from bft.cards.generation_card import render_generation_card
from bft.generation.layout import OUTPUT_CONFIG_NAMES, REJECTED_CONFIG


def test_the_card_shows_the_facts_it_is_given_and_loads_as_hub_metadata(tmp_path):
    configs = [{"config_name": "rewritten", "data_files": [{"split": "train", "path": "rewritten/data-1.parquet"}]}]
    stage_table = [
        {"name": "rewrite", "template": "rewrite", "sha": "ab" * 32, "model": "org/rewriter", "mode": "chat",
         "prefill": None, "sampling": "T=1.0, p=0.9, max 2048", "entered": 5, "kept": 4, "rejected": 1},
    ]  # fmt: skip
    rejects = [{"name": "rewrite", "reasons": {"rewrite_missing_tags": 1}}]
    render_generation_card(
        tmp_path,
        configs=configs,
        counts={"rewritten": 4, "rejected": 1},
        empty={"curated": "curate kept none of 5"},
        main_config="rewritten",
        stage_table=stage_table,
        rejects=rejects,
        documents_in=5,
        corpus="dolma/",
        note="a note on the settings",
    )
    text = (tmp_path / "README.md").read_text()
    metadata = yaml.safe_load(text.split("---\n")[1])
    assert metadata["configs"] == [{**configs[0], "default": True}]  # load_dataset(folder) needs no config name
    assert metadata["size_categories"] == ["n<1K"]
    assert "| rewrite | `rewrite` (`abababababab`) | org/rewriter | chat | T=1.0, p=0.9, max 2048 | 5 | 4 | 1 |" in text
    assert "`rewrite_missing_tags` 1" in text
    assert "Corpus: `dolma/`; 5 documents read." in text
    assert "Configs left empty, and therefore not written: `curated` (curate kept none of 5)." in text
    assert '"rewritten", split="train")' in text and "a note on the settings" in text


def test_every_config_a_run_writes_is_described_once_for_both_cards(tmp_path):
    written = {*OUTPUT_CONFIG_NAMES.values(), REJECTED_CONFIG}
    assert set(CONFIGS_ABOUT) == written and set(BUILT_CONFIGS_ABOUT) >= written | {"seed", "sft"}
    configs = [{"config_name": "distilled", "data_files": [{"split": "train", "path": "distilled/data-1.parquet"}]}]
    render_generation_card(
        tmp_path,
        configs=configs,
        counts={"distilled": 3},
        empty={},
        main_config="distilled",
        stage_table=[],
        rejects=[],
        documents_in=3,
        corpus="alpaca.jsonl",
    )
    assert f"| `distilled` | 3 | {CONFIGS_ABOUT['distilled']} |" in (tmp_path / "README.md").read_text()
