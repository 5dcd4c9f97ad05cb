"""Training data: sources from files, `bft build` folders and Hub releases, made into checked prompt/completion rows."""

import dataclasses
import json

import datasets
import pytest
from trl import get_dataset
from trl.scripts.utils import DatasetConfig, DatasetMixtureConfig

from bft.generation.cli import main
from bft.generation.errors import ConfigError
from bft.training.config import DataArguments, DataSource
from bft.training.mixtures import load_training_data, mixture_sizes
from tests.paths import DEMO_CORPUS, REPO
from tests.servers.tgi import TGITestServer

# Humpback sec. 2.3, pinned here literally: the tags the code defines must be these sentences
SEED_TAG = "Answer in the style of an AI Assistant."  # S_a
WEB_TAG = "Answer with knowledge from web search."  # S_w

SEED = REPO / "training" / "data" / "seed.jsonl"
WEB = REPO / "training" / "data" / "web.jsonl"
HUB_REPO = "bft-org/train-data"


def load(*sources, **kwargs):
    return load_training_data(DataArguments(datasets=[dict(s) for s in sources], **kwargs))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def user_text(row) -> str:
    return row["prompt"][-1]["content"]


def test_seed_rows_get_s_a_and_web_rows_get_s_w_never_swapped():
    splits, summaries = load({"path": str(SEED), "tag": "S_a"}, {"path": str(WEB), "tag": "S_w"})
    rows = splits["train"].to_list()
    seed_rows, web_rows = rows[:24], rows[24:]
    assert len(rows) == 36 and [s.used for s in summaries] == [24, 12]
    assert all(user_text(r).endswith("\n\n" + SEED_TAG) and WEB_TAG not in user_text(r) for r in seed_rows)
    assert all(user_text(r).endswith("\n\n" + WEB_TAG) and SEED_TAG not in user_text(r) for r in web_rows)
    first = json.loads(SEED.read_text().splitlines()[0])
    assert rows[0] == {
        "prompt": [{"role": "user", "content": f"{first['instruction']}\n\n{SEED_TAG}"}],
        "completion": [{"role": "assistant", "content": first["response"]}],
    }


def test_the_tag_can_be_a_system_message():
    splits, _ = load({"path": str(SEED), "tag": "S_a"}, tag_placement="system")
    row = splits["train"][0]
    assert row["prompt"][0] == {"role": "system", "content": SEED_TAG} and row["prompt"][1]["role"] == "user"


def test_reversed_rows_put_the_text_inside_p2_and_the_instruction_in_the_completion():
    splits, summaries = load({"path": str(SEED), "reverse": True})
    first = json.loads(SEED.read_text().splitlines()[0])
    row = splits["train"][0]
    assert user_text(row).startswith("Below is a candidate answer to a question or instruction from an user.")
    assert f"\n\n{first['response']}\n\n" in user_text(row)
    assert row["completion"] == [{"role": "assistant", "content": first["instruction"]}]
    assert summaries[0].kind == "reversed pairs (backward model)"


def test_bft_seed_reversed_output_trains_the_same_rows_as_reverse_true(tmp_path):
    reversed_file = tmp_path / "rev.jsonl"
    assert main(["seed", str(SEED), "--out", str(tmp_path / "s.jsonl"), "--reversed", str(reversed_file)]) == 0
    from_file, _ = load({"path": str(reversed_file)})
    made_here, _ = load({"path": str(SEED), "reverse": True})
    assert from_file["train"].to_list() == made_here["train"].to_list()


def test_fractions_follow_trls_mixture_rule(tmp_path):
    """The same sizes as TRL's own `get_dataset` for the same files and fractions."""
    for fractions in ((2, 1), (1, 1), (1, 3)):
        ours, summaries = load(
            {"path": str(SEED), "fraction": fractions[0]}, {"path": str(WEB), "fraction": fractions[1]}
        )
        theirs = get_dataset(
            DatasetMixtureConfig(
                datasets=[
                    DatasetConfig(path="json", data_files=str(SEED), fraction=fractions[0]),
                    DatasetConfig(path="json", data_files=str(WEB), fraction=fractions[1]),
                ]
            )
        )
        assert len(ours["train"]) == len(theirs["train"]), fractions
        assert sum(s.used for s in summaries) == len(ours["train"])
    assert mixture_sizes([24, 12], [2, 1]) == [24, 12] and mixture_sizes([24, 12], [1, 1]) == [12, 12]
    with pytest.raises(ConfigError, match="every dataset of the mixture or on none"):
        mixture_sizes([24, 12], [1, None])


def test_a_held_out_split_when_asked():
    splits, _ = load({"path": str(SEED), "tag": "S_a"}, test_split_size=0.25)
    assert len(splits["train"]) == 18 and len(splits["test"]) == 6


@pytest.fixture(scope="module")
def built_dataset(tmp_path_factory):
    """A generate output (TGI test server) built with bft's seed into a dataset folder, and released as v1.0.0."""
    base = tmp_path_factory.mktemp("train-data")
    out, folder = base / "out", base / "ds"
    with TGITestServer() as server:
        args = ["generate", str(DEMO_CORPUS), "--out", str(out), "--endpoint", server.url, "--limit", "8"]
        assert main([*args, "--no-progress"]) == 0
    assert main(["build", str(out), "--out", str(folder), "--seed", str(SEED), "--license", "odc-by"]) == 0
    return folder


def test_a_bft_build_folder_trains_from_its_configs(built_dataset):
    rewritten = datasets.load_dataset(str(built_dataset), "rewritten", split="train")
    splits, summaries = load(
        {"path": str(built_dataset), "name": "seed", "tag": "S_a"},
        {"path": str(built_dataset), "name": "rewritten", "tag": "S_w"},
    )
    assert [s.used for s in summaries] == [24, len(rewritten)] and len(rewritten) > 0
    web = splits["train"].to_list()[24:]
    assert [r["completion"][0]["content"] for r in web] == rewritten["response"]
    # the build's sft config is tagged at build time: the same rows, read as prompt/completion
    sft, summaries = load({"path": str(built_dataset), "name": "sft"})
    assert sft["train"].to_list() == splits["train"].to_list() and summaries[0].kind == "prompt/completion"


def test_a_hub_release_pinned_to_its_tag(built_dataset, hub, tmp_path):
    assert main(["release", str(built_dataset), "--repo", HUB_REPO, "--version", "1.0.0"]) == 0
    splits, summaries = load({"path": HUB_REPO, "name": "sft", "revision": "v1.0.0"})
    local, _ = load({"path": str(built_dataset), "name": "sft"})
    assert splits["train"].to_list() == local["train"].to_list()
    from huggingface_hub import HfApi

    tag_commit = next(t.target_commit for t in HfApi().list_repo_refs(HUB_REPO, repo_type="dataset").tags)
    assert summaries[0].revision == "v1.0.0" and summaries[0].commit == tag_commit
    # the shortcut fields say the same thing for one dataset
    short, _ = load_training_data(DataArguments(dataset_name=HUB_REPO, dataset_config="sft", dataset_revision="v1.0.0"))
    assert short["train"].to_list() == local["train"].to_list()
    with pytest.raises(ConfigError, match=r"dataset bft-org/train-data\[sft\]@v9.9.9: cannot load it"):
        load({"path": HUB_REPO, "name": "sft", "revision": "v9.9.9"})


def test_missing_columns_are_named(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(ConfigError, match=r"missing columns: .* it has \['question', 'answer'\]"):
        load({"path": str(path)})


def test_an_empty_dataset_is_refused(tmp_path):
    path = tmp_path / "empty.parquet"
    datasets.Dataset.from_dict({"instruction": [], "response": []}).to_parquet(path)
    with pytest.raises(ConfigError, match="empty.parquet is empty"):
        load({"path": str(path), "tag": "S_a"})
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ConfigError, match="empty.jsonl is empty"):
        load({"path": str(tmp_path / "empty.jsonl"), "tag": "S_a"})


def test_a_bad_row_is_named_by_its_id(tmp_path):
    rows = [{"id": "ok", "instruction": "q", "response": "a"}, {"id": "doc-7", "instruction": "q", "response": "  "}]
    with pytest.raises(ConfigError, match=r"row 1 \(id 'doc-7'\): `response` is empty"):
        load({"path": str(write_jsonl(tmp_path / "pairs.jsonl", rows)), "tag": "S_w"})
    chat = [{"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "user", "content": "a"}]}]
    with pytest.raises(ConfigError, match="row 0: the completion must be one non-empty assistant turn"):
        load({"path": str(write_jsonl(tmp_path / "chat.jsonl", chat))})
    with pytest.raises(ConfigError, match="prompt/completion already"):
        load({"path": str(write_jsonl(tmp_path / "chat2.jsonl", chat)), "tag": "S_a"})


def test_a_missing_source_is_named(tmp_path):
    with pytest.raises(ConfigError, match="dataset no/such-dataset: cannot load it"):
        load({"path": "no/such-dataset"})


def test_the_data_schema_is_trls_dataset_mixture_with_bfts_fields():
    """bft writes TRL's schema out (so that `bft train --help` loads without TRL); nothing of TRL's is missing."""

    def defaults(cls):  # each field's default value (MISSING for a required one)
        factory = dataclasses.MISSING
        return {
            f.name: f.default if f.default_factory is factory else f.default_factory() for f in dataclasses.fields(cls)
        }

    ours, theirs = defaults(DataSource), defaults(DatasetConfig)
    assert {k: ours[k] for k in theirs} == theirs and set(ours) - set(theirs) == {"revision", "tag", "reverse"}
    ours, theirs = defaults(DataArguments), defaults(DatasetMixtureConfig)
    assert {k: ours[k] for k in theirs} == theirs
