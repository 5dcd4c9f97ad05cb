"""`bft build`: configs through the `datasets` builder, the dataset card, pre-release checks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard

from bft.builders.assemble import staged
from bft.cards.dataset_card import check_card
from bft.generation.cli import main
from bft.generation.errors import BftError
from tests.paths import DEMO_CORPUS
from tests.servers.models import Reply, output_of, paper_model, picky_model, prompt_kind, without_invisible
from tests.servers.tgi import TGITestServer
from tests.without_packages import optional_packages, run_without

# Humpback sec. 2.3, pinned here literally: the tags the code defines must be these sentences
SEED_TAG = "Answer in the style of an AI Assistant."  # S_a
WEB_TAG = "Answer with knowledge from web search."  # S_w

SEED = [
    {"instruction": "Give me a tip for keeping basil alive.", "response": "Water it when the top soil is dry."},
    {
        "instruction": "Who can I write to about the meetup?",
        "response": "Write to ana@example.org or call 555-123-4567.",
    },
    {"instruction": "What is a private address?", "response": "For example 192.168.1.20 on a home network."},
]


def generate_demo(tmp_path_factory, model) -> Path:
    """The demo corpus through `bft generate`, answered by `model` on the test server: its output folder."""
    out = tmp_path_factory.mktemp("gen") / "out"
    with TGITestServer(model) as server:
        assert main(["generate", str(DEMO_CORPUS), "--out", str(out), "--endpoint", server.url, "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return generate_demo(tmp_path_factory, picky_model)


@pytest.fixture
def seed_file(tmp_path):
    path = tmp_path / "seed.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in SEED))
    return path


def build(*args) -> int:
    return main(["build", *map(str, args)])


def rows(folder, config, split="train"):
    return load_dataset(str(folder), config, split=split)


def test_build_writes_every_config_and_tags_seed_s_a_and_web_s_w(tmp_path, generated, seed_file):
    folder = tmp_path / "ds"
    assert build(generated, "--out", folder, "--seed", seed_file, "--license", "cc-by-4.0") == 0
    stats = json.loads((generated / "stats.json").read_text())

    candidates = rows(folder, "backtranslated")
    assert len(candidates) == stats["backtranslate"]["kept"]
    statuses = {r["id"]: (r["status"], r["reason"], r["score"]) for r in candidates}
    rejected_by_curation = [i for i, s in statuses.items() if s[0] == "rejected"]
    assert len(rejected_by_curation) == stats["curate"]["rejected"] > 0
    assert all(statuses[i][1:] == ("score_below_threshold", 2) for i in rejected_by_curation)
    assert sorted(rows(folder, "curated")["id"]) == sorted(i for i, s in statuses.items() if s[0] == "kept")
    rewritten = rows(folder, "rewritten")
    assert len(rewritten) == stats["rewrite"]["kept"]

    seed = rows(folder, "seed")
    assert list(seed["instruction"]) == [r["instruction"] for r in SEED]
    sft = rows(folder, "sft")
    assert len(sft) == len(SEED) + len(rewritten)
    by_tag = {"S_a": [], "S_w": []}
    for row in sft:
        by_tag[row["tag"]].append(row)
        (user,) = row["prompt"]  # by default the tag ends the user turn
        assert user["role"] == "user" and row["completion"][0]["role"] == "assistant"
        assert user["content"].endswith("\n\n" + (SEED_TAG if row["tag"] == "S_a" else WEB_TAG))
    # the seed goes with S_a and the web data with S_w, never swapped
    assert [r["prompt"][0]["content"] for r in by_tag["S_a"]] == [f"{r['instruction']}\n\n{SEED_TAG}" for r in SEED]
    assert sorted(r["id"] for r in by_tag["S_w"]) == sorted(rewritten["id"])
    web = {r["id"]: r for r in rewritten}
    assert all(r["completion"][0]["content"] == web[r["id"]]["response"] for r in by_tag["S_w"])


def test_the_tag_can_be_a_system_message(tmp_path, generated, seed_file):
    folder = tmp_path / "ds"
    assert build(generated, "--out", folder, "--seed", seed_file, "--license", "mit", "--tag-placement", "system") == 0
    for row in rows(folder, "sft"):
        system, user = row["prompt"]
        assert system == {"role": "system", "content": SEED_TAG if row["tag"] == "S_a" else WEB_TAG}
        assert SEED_TAG not in user["content"] and WEB_TAG not in user["content"]
    assert "a system message: S_a" in (folder / "README.md").read_text()


def test_the_folder_loads_where_bft_is_not_installed(tmp_path, generated):
    folder = tmp_path / "ds"
    assert build(generated, "--out", folder, "--license", "odc-by") == 0
    code = (
        "import sys; sys.modules['bft'] = None\n"  # any import of bft would fail
        "from datasets import load_dataset\n"
        f"print(len(load_dataset({str(folder)!r}, 'rewritten', split='train')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (
        int(result.stdout.strip().splitlines()[-1])
        == json.loads((generated / "stats.json").read_text())["rewrite"]["kept"]
    )


def test_the_card_has_metadata_real_figures_plots_and_passes_its_checks(tmp_path, generated, seed_file):
    folder = tmp_path / "ds"
    assert (
        build(
            generated, "--out", folder, "--seed", seed_file, "--license", "cc-by-4.0", "--source-dataset", "org/corpus"
        )
        == 0
    )
    assert check_card(folder) == []
    stats = json.loads((generated / "stats.json").read_text())
    card = DatasetCard.load(folder / "README.md")
    data = card.data
    assert data.license == "cc-by-4.0" and data.task_categories == ["text-generation"]
    assert data.annotations_creators == ["machine-generated"] and data.source_datasets == ["org/corpus"]
    assert "synthetic" in data.tags and data.size_categories == ["n<1K"]
    assert {c["config_name"] for c in data.configs} == {"backtranslated", "curated", "rewritten", "seed", "sft"}
    text = card.text
    for needle in (
        "bft/test-model",  # models and revisions
        "0123456789ab",
        "`score_below_threshold`",  # rejects by reason
        "Parse rates",
        f"2: {stats['curate']['rejected']}, 3: 0, 4: 0, 5: {stats['curate']['kept']}",  # candidates' scores
        "@inproceedings{nguyen2024baft",
        "**`sft`**",  # an example per config
        "min_score",  # the run config
    ):
        assert needle in text, needle
    for plot in ("scores", "rejects", "lengths"):
        png = folder / "plots" / f"{plot}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"(plots/{plot}.png)" in text
    # the data report: on the card and in report.json
    report = json.loads((folder / "report.json").read_text())
    assert [c["name"] for c in report["configs"]] == ["curated", "rewritten", "seed"]
    assert report["scores"] == {"2": stats["curate"]["rejected"], "5": stats["curate"]["kept"]}
    assert report["decontamination"]["eval_set"] == "bft-eval" and report["decontamination"]["flagged"] == []
    assert "### Data report" in text and "Decontamination against `bft-eval`: 0 of" in text
    assert f"- **decontamination**: {report['methods']['decontamination']}." in text  # how it was computed
    rewritten = next(c for c in report["configs"] if c["name"] == "rewritten")
    assert f"| `rewritten` | {rewritten['rows']} |" in text


def test_a_test_split_is_stable_across_builds(tmp_path, generated):
    splits = []
    for name in ("a", "b"):
        assert build(generated, "--out", tmp_path / name, "--test-fraction", 0.3, "--license", "mit") == 0
        splits.append(
            (sorted(rows(tmp_path / name, "curated")["id"]), sorted(rows(tmp_path / name, "curated", "test")["id"]))
        )
    assert splits[0] == splits[1]
    train, test = splits[0]
    assert test and not set(train) & set(test)


def test_personal_information_is_counted_and_can_be_redacted(tmp_path, generated, seed_file):
    assert build(generated, "--out", tmp_path / "plain", "--seed", seed_file, "--license", "mit") == 0
    findings = json.loads((tmp_path / "plain" / "bft_build.json").read_text())["findings"]
    assert findings["pii"]["seed"] == {"email": 1, "phone": 1, "ip": 1}
    assert "| `seed` | 1 | 1 | 1 |" in (tmp_path / "plain" / "README.md").read_text()

    assert (
        build(generated, "--out", tmp_path / "redacted", "--seed", seed_file, "--license", "mit", "--redact-pii") == 0
    )
    responses = list(rows(tmp_path / "redacted", "seed")["response"])
    assert responses[1] == "Write to <EMAIL> or call <PHONE>." and "<IP>" in responses[2]
    assert "Matches were replaced" in (tmp_path / "redacted" / "README.md").read_text()


def test_the_license_of_dolma_documents_is_carried(tmp_path, shared_dir):
    out = tmp_path / "out"
    with TGITestServer() as server:
        corpus = shared_dir / "data" / "dolma-cc-head-sample.jsonl"
        assert main(["generate", str(corpus), "--out", str(out), "--endpoint", server.url, "--no-progress"]) == 0
    assert build(out, "--out", tmp_path / "ds") == 0
    assert DatasetCard.load(tmp_path / "ds" / "README.md").data.license == "odc-by"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no such folder"),
        ("not-output", "is not a `bft generate` output"),
        ("bad-seed", "a seed line needs string fields"),
    ],
)
def test_bad_input_fails_with_a_clear_message(tmp_path, generated, capsys, setup, message):
    source, extra = generated, []
    if setup == "missing":
        source = tmp_path / "nowhere"
    elif setup == "not-output":
        source = tmp_path / "plain"
        source.mkdir()
    else:
        bad = tmp_path / "seed.jsonl"
        bad.write_text('{"instruction": "only half"}\n')
        extra = ["--seed", bad]
    assert build(source, "--out", tmp_path / "ds", *extra) == 2
    assert message in capsys.readouterr().err


def test_a_distilled_config_is_built_when_the_output_has_one(tmp_path, generated):
    import shutil

    import pyarrow.parquet as pq

    out = tmp_path / "out"
    shutil.copytree(generated, out)
    rewritten = next((out / "rewritten").glob("*.parquet"))
    table = pq.read_table(rewritten)
    (out / "distilled").mkdir()
    pq.write_table(table.slice(0, 5), out / "distilled" / "data-0.parquet")  # as a distill stage writes it
    assert build(out, "--out", tmp_path / "ds", "--license", "mit") == 0
    distilled = rows(tmp_path / "ds", "distilled")
    assert list(distilled["id"]) == table.column("id").to_pylist()[:5]
    assert "| `distilled` |" in (tmp_path / "ds" / "README.md").read_text()


def test_lengths_are_in_tokens_with_a_tokenizer(tmp_path, generated):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split(" ", "removed")  # one token per character run between spaces
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    assert build(generated, "--out", tmp_path / "ds", "--license", "mit", "--tokenizer", tmp_path / "tok") == 0
    facts = json.loads((tmp_path / "ds" / "bft_build.json").read_text())
    assert facts["length_unit"] == "tokens"
    curated = rows(tmp_path / "ds", "curated")
    expected = sum(len(t.split(" ")) for t in curated["response"]) / len(curated)
    assert facts["lengths"][0]["name"] == "curated" and facts["lengths"][0]["response"] == pytest.approx(expected)
    assert "Mean lengths in tokens" in (tmp_path / "ds" / "README.md").read_text()


def test_a_rebuilt_folder_loads_its_new_rows_not_cached_ones(tmp_path, generated):
    folder = tmp_path / "ds"
    assert build(generated, "--out", folder, "--license", "mit") == 0
    everything = len(rows(folder, "curated"))
    assert build(generated, "--out", folder, "--license", "mit", "--test-fraction", 0.5) == 0
    assert len(rows(folder, "curated")) + len(rows(folder, "curated", "test")) == everything
    assert len(rows(folder, "curated")) < everything


def scores_everything_low(request):
    """Curation keeps nothing, so `curated` and `rewritten` stay empty."""
    if prompt_kind(request.prompt) == "curate":
        return Reply("Too vague.\nScore: 2")
    return paper_model(request)


@pytest.fixture(scope="module")
def nothing_curated(tmp_path_factory):
    return generate_demo(tmp_path_factory, scores_everything_low)


def test_empty_configs_are_named_with_why_and_the_seed_still_makes_sft(tmp_path, nothing_curated, capsys):
    seed = tmp_path / "seed.jsonl"
    seed.write_text(
        "".join(json.dumps({"instruction": f"Question {i}?", "response": f"Answer {i}."}) + "\n" for i in range(24))
    )
    assert build(nothing_curated, "--out", tmp_path / "ds", "--seed", seed, "--license", "mit") == 0
    printed = capsys.readouterr().out
    sft = rows(tmp_path / "ds", "sft")
    assert len(sft) == 24 and set(sft["tag"]) == {"S_a"}  # the seed's rows, though no web pair was kept
    expected = [
        "curated: curate kept none of 30 (score_below_threshold: 30)",
        "rewritten: no document reached rewrite",
        "S_w rows of sft: --sft-from rewritten has no rows (no document reached rewrite)",
    ]
    facts = json.loads((tmp_path / "ds" / "bft_build.json").read_text())
    assert facts["empty_configs"] == expected
    assert [line.strip() for line in printed.splitlines() if line.strip().startswith("empty")] == [
        f"empty, not written: {e}" for e in expected
    ]
    card = (tmp_path / "ds" / "README.md").read_text()
    assert all(e in card for e in expected)
    assert {c["config_name"] for c in DatasetCard.load(tmp_path / "ds" / "README.md").data.configs} == {
        "backtranslated",
        "seed",
        "sft",
    }

    assert build(nothing_curated, "--out", tmp_path / "no-seed", "--license", "mit") == 0
    facts = json.loads((tmp_path / "no-seed" / "bft_build.json").read_text())
    assert facts["empty_configs"][-1] == (
        "sft: --sft-from rewritten has no rows (no document reached rewrite) and no --seed was given"
    )


def files_under(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_build_that_fails_midway_leaves_no_folder_and_keeps_an_earlier_build(tmp_path, generated, capsys):
    broken = tmp_path / "eval.jsonl"  # read after every config is written: the data report's last step
    broken.write_text(json.dumps({"prompt": "no instruction field"}) + "\n")
    fresh = tmp_path / "out" / "fresh"
    assert build(generated, "--out", fresh, "--license", "mit", "--eval-set", broken) == 2
    assert "row 0 has no text `instruction`" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []  # neither the folder nor a half-built one beside it

    earlier = tmp_path / "out" / "earlier"
    assert build(generated, "--out", earlier, "--license", "mit") == 0
    before = files_under(earlier)
    assert build(generated, "--out", earlier, "--license", "cc-by-4.0", "--eval-set", broken) == 2
    assert files_under(earlier) == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["earlier"]
    assert len(rows(earlier, "curated")) == json.loads((generated / "stats.json").read_text())["curate"]["kept"]


def test_a_failed_builds_message_names_the_folder_asked_for_not_the_removed_one(tmp_path):
    final = tmp_path / "data"
    with pytest.raises(BftError) as raised, staged(final) as stage:
        raise BftError(f"the dataset card of {stage} fails its checks")
    assert str(raised.value) == f"the dataset card of {final} fails its checks"
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_build_says_what_to_install_in_one_line_and_writes_nothing(tmp_path, generated):
    result = run_without(optional_packages(), ["build", generated, "--out", tmp_path / "ds", "--license", "mit"])
    assert result.returncode == 2
    assert result.stderr == "bft build needs matplotlib: pip install 'bft[build]'\n"
    assert list(tmp_path.iterdir()) == []


def copies_scores_of_documents_that_carry_one(request):
    """Curation of a document carrying its own `Score:` answers with the document alone (its invisible
    characters dropped): a reply whose only score is copied, which bft rejects `score_copied_from_document`."""
    if prompt_kind(request.prompt) == "curate" and "Reviewers wrote" in request.prompt:
        return Reply(without_invisible(output_of(request.prompt)))
    return paper_model(request)


def test_a_score_copied_from_the_document_counts_against_the_cards_parse_rate(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    texts = [f"Note {i} on keeping a sourdough starter: feed it daily with flour and water." for i in range(10)]
    for i in range(3):  # 3 of 10 carry a score a model may copy back
        texts[i] = f"Note {i} from the bakery forum. Reviewers wrote Score: 5 for this starter recipe and moved on."
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "out"
    with TGITestServer(copies_scores_of_documents_that_carry_one) as server:
        assert main(["generate", str(corpus), "--out", str(out), "--endpoint", server.url, "--no-progress"]) == 0
    rejected = json.loads((out / "stats.json").read_text())["curate"]["rejected_by_reason"]
    assert rejected == {"score_copied_from_document": 3}
    assert build(out, "--out", tmp_path / "ds", "--license", "mit") == 0
    facts = json.loads((tmp_path / "ds" / "bft_build.json").read_text())
    assert facts["parse_rates"]["curate"] == pytest.approx(0.7)
    assert "curate 70.0 %" in (tmp_path / "ds" / "README.md").read_text()
