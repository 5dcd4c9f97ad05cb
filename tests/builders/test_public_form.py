"""A released dataset fits the Hub's conventions: a default config, no local path or private host in any
file, the generating models' terms, Uses and Sources, license_name for `other`, shared plot bins."""

import json

import pyarrow.parquet as pq
import pytest
import yaml
from datasets import load_dataset

from bft.builders.public_form import public_location, public_url, public_value
from bft.cards.common import model_terms
from bft.cards.dataset_card import check_card
from bft.cards.plots import shared_bins
from bft.generation.cli import main
from tests.paths import DEMO_CORPUS
from tests.servers.models import picky_model
from tests.servers.tgi import TGITestServer


def test_local_paths_and_private_hosts_take_their_public_form():
    assert public_url("http://gpu7.internal:8080/v1") == "http://<private-host>:8080/v1"
    assert public_url("http://10.0.3.4:8000") == "http://<private-host>:8000"
    assert public_url("http://user:pw@127.0.0.1:9/x?key=secret") == "http://<private-host>:9/x"
    assert public_url("https://api.openai.com/v1") == "https://api.openai.com/v1"
    assert public_location("/data/crawl/part-001.jsonl.gz:17") == "part-001.jsonl.gz:17"
    assert public_location("location:/home/ana/c.jsonl:3") == "location:c.jsonl:3"
    assert public_location("corpus.jsonl:2") == "corpus.jsonl:2" and public_location("allenai/dolma") == "allenai/dolma"
    config = {
        "corpus": {"path": "/home/ana/dolma"},
        "endpoints": ["http://node3:8080"],
        "curate": {"tokenizer": "/m/t"},
        "serve": {"args": ["--download-dir /scratch/hf", "--chat-template=/home/ana/t.jinja", "-tp 4"]},
    }
    assert public_value(config) == {"corpus": {"path": "dolma"}, "endpoints": ["http://<private-host>:8080"],
                                    "curate": {"tokenizer": "t"},
                                    "serve": {"args": ["--download-dir hf", "--chat-template=t.jinja", "-tp 4"]}}  # fmt: skip


def every_string(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from every_string(item)
    elif isinstance(value, list):
        for item in value:
            yield from every_string(item)
    elif isinstance(value, str):
        yield value


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("public")
    corpus = root / "private-dir" / "corpus.jsonl"
    corpus.parent.mkdir()
    corpus.write_text(DEMO_CORPUS.read_text())
    out = root / "out"
    with TGITestServer(picky_model, model_id="meta-llama/Llama-2-70b-chat-hf") as server:
        args = ["generate", str(corpus), "--endpoint", server.url, "--limit", "12", "--no-progress"]
        assert main([*args, "--out", str(root / "first-run")]) == 0
        assert main([*args, "--out", str(out)]) == 0  # answered by the request cache: provenance names the first run
    assert json.loads((out / "stats.json").read_text())["backtranslate"]["cache_hits"] == 12
    return out


def test_no_released_file_names_a_local_path_or_a_private_host(generated, tmp_path):
    folder = tmp_path / "ds"
    assert main(["build", str(generated), "--out", str(folder), "--license", "odc-by"]) == 0
    private = [str(generated.parent), "private-dir/", "127.0.0.1", "localhost"]
    for path in folder.rglob("*"):
        if path.suffix == ".parquet":
            for row in pq.read_table(path).to_pylist():
                for text in every_string(row):
                    assert not any(p in text for p in private), (path.name, text)
        elif path.suffix in (".md", ".yaml", ".json"):
            text = path.read_text()
            assert not any(p in text for p in private), (path.name, [p for p in private if p in text])
    rows = load_dataset(str(folder), "backtranslated", split="train")
    assert rows[0]["input_location"] == "corpus.jsonl:1"
    run_config = yaml.safe_load((folder / "run_config.yaml").read_text())
    assert run_config["corpus"]["path"] == "corpus.jsonl" and run_config["endpoints"][0].startswith(
        "http://<private-host>:"
    )
    assert check_card(folder) == []


def test_the_card_has_a_default_config_sources_uses_and_the_models_terms(generated, tmp_path):
    folder = tmp_path / "ds"
    assert main(["build", str(generated), "--out", str(folder), "--license", "odc-by"]) == 0
    card = (folder / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---\n")[1])
    assert [c["config_name"] for c in metadata["configs"] if c.get("default")] == ["rewritten"]
    default = load_dataset(str(folder), split="train")  # no config name: the default one
    assert len(default) == len(load_dataset(str(folder), "rewritten", split="train")) and "response" in default.features
    assert len(load_dataset(str(generated), split="train")) == len(default)  # a generate output's card too
    assert "### Dataset Sources" in card and "## Uses" in card and "### Out-of-Scope Use" in card
    assert "`meta-llama/Llama-2-70b-chat-hf`: Llama 2 Community License and Acceptable Use Policy" in card
    assert "pypi.org" not in card  # bft has no package index page to link to


def test_license_other_needs_a_name_which_the_card_then_carries(generated, tmp_path, capsys):
    folder = tmp_path / "ds"
    assert main(["build", str(generated), "--out", str(folder), "--license", "other"]) == 2
    assert "fails its checks: license 'other' needs license_name" in capsys.readouterr().err
    args = ["--license", "other", "--license-name", "Llama 2 Community License", "--license-link", "https://x.org/l"]
    assert main(["build", str(generated), "--out", str(folder), *args]) == 0
    metadata = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
    assert metadata["license"] == "other" and metadata["license_name"] == "Llama 2 Community License"
    assert metadata["license_link"] == "https://x.org/l" and check_card(folder) == []
    assert json.loads((folder / "bft_build.json").read_text())["license_name"] == "Llama 2 Community License"


def test_terms_are_named_per_model_and_lengths_share_their_bins():
    assert model_terms(["meta-llama/Llama-2-7b-hf", "org/own-model", "meta-llama/Llama-2-7b-hf"]) == [
        "`meta-llama/Llama-2-7b-hf`: Llama 2 Community License and Acceptable Use Policy (https://ai.meta.com/llama/"
        "license/): outputs may not be used to improve other large language models, Llama 2 derivatives aside",
        "`org/own-model`: check its license and terms of use for generated outputs",
    ]
    bins = shared_bins({"curated": [900, 1200, 4000], "rewritten": [40, 60, 80]})
    assert len(bins) == 31 and bins[0] == 40 and bins[-1] == 4000
    assert shared_bins({"a": [5, 5]}) == [4.5, 5.5] and shared_bins({}) == []
