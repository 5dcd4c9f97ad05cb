"""`bft release` against the Hub test server, through the real `huggingface_hub` and `datasets` clients."""

from pathlib import Path

import pytest
from datasets import load_dataset
from huggingface_hub import HfApi

from bft.generation.cli import main
from tests.paths import DEMO_CORPUS
from tests.servers.tgi import TGITestServer

REPO = "bft-org/demo-data"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Two generate outputs (10 and 20 documents) built into two dataset folders."""
    base = tmp_path_factory.mktemp("rel")
    folders = {}
    with TGITestServer() as server:
        for name, limit in (("small", 10), ("large", 20)):
            out = base / f"out-{name}"
            args = ["generate", str(DEMO_CORPUS), "--out", str(out), "--endpoint", server.url, "--limit", str(limit)]
            assert main([*args, "--no-progress"]) == 0
            folders[name] = out
    return folders


def built(tmp_path, outputs, name):
    folder = tmp_path / f"ds-{name}"
    assert main(["build", str(outputs[name]), "--out", str(folder), "--license", "odc-by"]) == 0
    return folder


def release(folder, version, *extra) -> int:
    return main(["release", str(folder), "--repo", REPO, "--version", version, *extra])


def local_rows(folder, config="rewritten"):
    return load_dataset(str(folder), config, split="train").to_list()


def hub_rows(version, config="rewritten"):
    return load_dataset(REPO, config, split="train", revision=version).to_list()


def test_release_two_versions_and_load_each_back(tmp_path, outputs, hub, capsys):
    first, second = built(tmp_path, outputs, "small"), built(tmp_path, outputs, "large")
    assert release(first, "1.0.0", "--private") == 0
    assert 'load_dataset("bft-org/demo-data", "rewritten", revision="v1.0.0")' in capsys.readouterr().out
    assert release(second, "1.1.0") == 0

    api = HfApi()
    assert api.repo_info(REPO, repo_type="dataset").private is True
    refs = api.list_repo_refs(REPO, repo_type="dataset")
    tags = {t.name: t.target_commit for t in refs.tags}
    assert set(tags) == {"v1.0.0", "v1.1.0"} and tags["v1.1.0"] == refs.branches[0].target_commit
    assert hub_rows("v1.0.0") == local_rows(first) and len(hub_rows("v1.0.0")) == 10
    assert load_dataset(REPO, split="train", revision="v1.0.0").to_list() == local_rows(first)  # the default config
    assert hub_rows("v1.1.0") == local_rows(second) and len(hub_rows("v1.1.0")) == 20
    assert hub_rows("v1.1.0", "backtranslated") == local_rows(second, "backtranslated")

    card = Path(api.hf_hub_download(REPO, "README.md", repo_type="dataset")).read_text()
    changelog = card.split("## Changelog")[1]
    assert "- v1.1.0 (" in changelog and "- v1.0.0 (" in changelog  # the earlier entry is kept


def test_releasing_the_same_version_again_is_harmless(tmp_path, outputs, hub, capsys):
    folder = built(tmp_path, outputs, "small")
    assert release(folder, "1.0.0") == 0
    commits = len(HfApi().list_repo_commits(REPO, repo_type="dataset"))
    hub.log.clear()
    assert release(folder, "1.0.0") == 0
    assert "already has v1.0.0 with exactly these files" in capsys.readouterr().out
    assert len(HfApi().list_repo_commits(REPO, repo_type="dataset")) == commits
    assert [p for _, p in hub.uploads() if "/commit/" in p or "/tag/" in p or "lfs" in p] == []


def test_a_changed_card_under_a_released_version_is_refused_with_the_files_that_differ(tmp_path, outputs, hub, capsys):
    assert release(built(tmp_path, outputs, "small"), "1.0.0") == 0
    fixed = tmp_path / "fixed"
    assert main(["build", str(outputs["small"]), "--out", str(fixed), "--license", "odc-by", "--name", "Better"]) == 0
    capsys.readouterr()
    assert release(fixed, "1.0.0") == 2
    err = capsys.readouterr().err
    assert "with different files (bft_build.json)" in err and "never moved" in err


def test_an_existing_tag_is_never_moved(tmp_path, outputs, hub, capsys):
    assert release(built(tmp_path, outputs, "small"), "1.0.0") == 0
    tagged = {t.name: t.target_commit for t in HfApi().list_repo_refs(REPO, repo_type="dataset").tags}
    assert release(built(tmp_path, outputs, "large"), "1.0.0") == 2
    assert "never moved" in capsys.readouterr().err
    assert {t.name: t.target_commit for t in HfApi().list_repo_refs(REPO, repo_type="dataset").tags} == tagged
    assert len(hub_rows("v1.0.0")) == 10


def test_dry_run_uploads_nothing(tmp_path, outputs, hub, capsys):
    assert release(built(tmp_path, outputs, "small"), "1.0.0", "--dry-run") == 0
    assert "nothing uploaded" in capsys.readouterr().out
    assert hub.log == []  # not a single request


def test_create_pr_opens_a_pull_request_and_leaves_main_and_tags_alone(tmp_path, outputs, hub, capsys):
    assert release(built(tmp_path, outputs, "small"), "1.0.0") == 0
    main_before = HfApi().list_repo_refs(REPO, repo_type="dataset").branches[0].target_commit
    assert release(built(tmp_path, outputs, "large"), "1.1.0", "--create-pr") == 0
    assert "/discussions/1" in capsys.readouterr().out
    refs = HfApi().list_repo_refs(REPO, repo_type="dataset")
    assert refs.branches[0].target_commit == main_before and [t.name for t in refs.tags] == ["v1.0.0"]
    assert len(load_dataset(REPO, "rewritten", split="train", revision="refs/pr/1")) == 20


def test_the_token_is_sent_but_never_printed_or_written(tmp_path, outputs, hub, capsys, monkeypatch):
    secret = "hf_releaseTOKENneverSHOWN0123456789"
    monkeypatch.setenv("HF_TOKEN", secret)
    folder = built(tmp_path, outputs, "small")
    assert release(folder, "1.0.0") == 0 and release(folder, "1.0.0") == 0
    assert hub.authorizations == {f"Bearer {secret}"}
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
    assert not [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.parametrize(
    ("repo", "version", "problem", "message"),
    [
        (REPO, "1.0", None, "is not a semantic version"),
        ("not a repo", "1.0.0", None, "is not a Hub repo id"),
        (REPO, "1.0.0", "missing", "no such folder"),
        (REPO, "1.0.0", "empty-config", "have no rows"),
        (REPO, "1.0.0", "secret", "secret-looking string"),
    ],
)
def test_bad_input_fails_before_anything_is_uploaded(tmp_path, outputs, hub, capsys, repo, version, problem, message):
    folder = built(tmp_path, outputs, "small")
    if problem == "missing":
        folder = tmp_path / "nowhere"
    elif problem == "empty-config":
        import json

        facts = json.loads((folder / "bft_build.json").read_text())
        facts["config_rows"][0]["rows"] = 0
        (folder / "bft_build.json").write_text(json.dumps(facts))
    elif problem == "secret":
        (folder / "notes.txt").write_text("token: hf_" + "a1B2c3D4e5" * 4)
    assert main(["release", str(folder), "--repo", repo, "--version", version]) == 2
    assert message in capsys.readouterr().err
    assert hub.log == []


def test_a_token_the_hub_refuses_is_named_with_what_to_check(tmp_path, outputs, hub, capsys, monkeypatch):
    folder = built(tmp_path, outputs, "small")
    monkeypatch.setenv("HF_TOKEN", "hf_expired")
    hub.refused_tokens.add("hf_expired")
    assert release(folder, "1.0.0") == 2
    err = capsys.readouterr().err
    assert "the Hugging Face Hub answered 401: the token is missing or invalid; check HF_TOKEN" in err
    assert "hf_expired" not in err and not hub.repos  # nothing was created
