"""`bft release`: push a built dataset folder to the Hub as a tagged, versioned release.

    bft release DATASETDIR --repo ORG/NAME --version 1.2.0 [--private] [--create-pr] [--dry-run]

Before anything is sent, the folder, the repo id and the version are validated, the card is checked, every
config must have rows, and the pre-release checks must pass (a license; no secret-looking string in any
file). Then the repo is created if needed, the card gets its changelog entry (earlier entries are kept
from the card on the Hub), all files are committed in one commit, and the tag `vX.Y.Z` is put on exactly
that commit.

An existing tag is never moved: releasing a version again is harmless when its data files are the same
(nothing is uploaded), and refused when they differ. `--create-pr` opens a pull request instead of
committing to `main` and does not tag; run the release again after merging to tag it. `--dry-run` prints
what would be uploaded and sends nothing. The token comes from `HF_TOKEN` (or the Hub login) and is never
printed or written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from bft.builders.checks import Findings, scan_secrets
from bft.builders.facts import FACTS_FILE, BuildFacts
from bft.builders.versions import REPO_ID_RE, VERSION_RE
from bft.cards.dataset_card import changelog_of, check_card
from bft.generation.errors import BftError, ConfigError
from bft.generation.text import file_sha256

CARD_FILES = {"README.md", FACTS_FILE}  # rewritten by every release: compared through the facts
RELEASE_FIELDS = {"changelog", "load_path", "revision", "findings"}  # what a release writes into the facts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="A dataset folder written by `bft build`")
    parser.add_argument("--repo", required=True, help="Hub dataset repo, ORG/NAME")
    parser.add_argument("--version", required=True, help="Semantic version X.Y.Z; tagged vX.Y.Z")
    parser.add_argument("--private", action="store_true", help="Create the repo private")
    parser.add_argument("--create-pr", action="store_true", help="Open a pull request instead of committing to main")
    parser.add_argument("--dry-run", action="store_true", help="Check and print the plan; upload nothing")


def validate(folder: Path, repo: str, version: str) -> BuildFacts:
    """Everything that can be checked locally; returns the build facts."""
    if not REPO_ID_RE.match(repo):
        raise ConfigError(f"--repo {repo!r} is not a Hub repo id of the form ORG/NAME")
    if not VERSION_RE.match(version):
        raise ConfigError(f"--version {version!r} is not a semantic version X.Y.Z (e.g. 1.2.0)")
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder")
    facts = BuildFacts.read(folder)
    empty = sorted(name for name, rows in facts.train_rows().items() if rows == 0)
    if empty:
        raise ConfigError(f"config(s) {empty} have no rows; rebuild without them or with more data before releasing")
    problems = check_card(folder)
    if problems:
        raise ConfigError(f"the card of {folder} fails its checks: {'; '.join(problems)}")
    findings = Findings.from_dict(facts.findings)
    findings.secrets = scan_secrets(folder)
    if findings.blocking:
        raise ConfigError("release blocked: " + "; ".join(findings.blocking))
    return facts


def _facts_digest(data: dict) -> str:
    """The card facts that make a release what it is: everything but what each release rewrites itself."""
    kept = {k: v for k, v in data.items() if k not in RELEASE_FIELDS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def local_files(folder: Path) -> dict[str, str]:
    """sha256 of every file by path; the card counts through its facts (`bft_build.json`, less the
    changelog and the Hub address a release writes into it), since README.md is rendered from them."""
    files = {
        p.relative_to(folder).as_posix(): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() not in CARD_FILES
    }
    files[FACTS_FILE] = _facts_digest(BuildFacts.read(folder).to_dict())
    return files


def remote_files(api, repo: str, revision: str) -> dict[str, str]:
    """sha256 of every file of `repo` at `revision` (LFS ids, or hashed after download), counted as
    `local_files` counts them."""
    from huggingface_hub import hf_hub_download

    files = {}
    for entry in api.list_repo_tree(repo, repo_type="dataset", revision=revision, recursive=True):
        path = getattr(entry, "path", "")
        if not hasattr(entry, "size") or path in ("README.md", ".gitattributes") or not hasattr(entry, "blob_id"):
            continue
        if path == FACTS_FILE:
            local = hf_hub_download(repo, path, repo_type="dataset", revision=revision, endpoint=api.endpoint)
            files[path] = _facts_digest(json.loads(Path(local).read_text(encoding="utf-8")))
        elif entry.lfs is not None:
            files[path] = entry.lfs.sha256
        else:
            local = hf_hub_download(repo, path, repo_type="dataset", revision=revision, endpoint=api.endpoint)
            files[path] = file_sha256(Path(local))
    return files


def differing(local: dict[str, str], remote: dict[str, str]) -> list[str]:
    """The paths whose content differs between two file listings, or that only one of them has."""
    return sorted(p for p in set(local) | set(remote) if local.get(p) != remote.get(p))


def run(args: argparse.Namespace) -> int:
    folder, repo, version = Path(args.folder), args.repo, args.version
    facts = validate(folder, repo, version)
    tag = f"v{version}"
    if args.dry_run:
        paths = sorted(set(CARD_FILES) | set(local_files(folder)))
        print(f"bft release (dry run): would push {len(paths)} files to {repo} and tag {tag}; nothing uploaded")
        for path in paths:
            print(f"  {path}")
        return 0

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    api = HfApi()
    try:
        api.create_repo(repo, repo_type="dataset", private=args.private, exist_ok=True)
        refs = api.list_repo_refs(repo, repo_type="dataset")
    except HfHubHTTPError as error:
        raise BftError(f"cannot reach the Hub repo {repo}: {_message(error)}") from None
    tags = {ref.name: ref.target_commit for ref in refs.tags}
    if tag in tags:
        changed = differing(local_files(folder), remote_files(api, repo, tag))
        if not changed:
            print(f"bft release: {repo} already has {tag} with exactly these files; nothing to do")
            print(_load_line(repo, facts, tag))
            return 0
        shown = ", ".join(changed[:20]) + (f" and {len(changed) - 20} more" if len(changed) > 20 else "")
        raise ConfigError(
            f"{repo} already has tag {tag} at {tags[tag][:12]} with different files ({shown}); "
            "a released version is never moved: release a new version"
        )

    try:
        readme = Path(api.hf_hub_download(repo, "README.md", repo_type="dataset"))
        earlier = changelog_of(readme.read_text(encoding="utf-8"))
    except (RepositoryNotFoundError, HfHubHTTPError, OSError):
        earlier = []
    rows = ", ".join(f"{name} {n}" for name, n in facts.train_rows().items())
    entry = f"{tag} ({time.strftime('%Y-%m-%d', time.gmtime())}): {rows}"
    facts.changelog = [entry, *(e for e in earlier if not e.startswith(f"{tag} "))]
    facts.load_path, facts.revision = repo, tag
    facts.write(folder)

    try:
        commit = api.upload_folder(
            repo_id=repo,
            repo_type="dataset",
            folder_path=folder,
            commit_message=f"Release {tag}",
            commit_description=entry,
            delete_patterns=["*.parquet", "**/*.parquet", "plots/*"],
            create_pr=args.create_pr,
        )
        if args.create_pr:
            print(f"bft release: opened {commit.pr_url}; merge it, then run this command again to tag {tag}")
            return 0
        api.create_tag(repo, tag=tag, revision=commit.oid, repo_type="dataset", tag_message=entry)
    except HfHubHTTPError as error:
        raise BftError(f"release of {repo} {tag} failed: {_message(error)}") from None
    print(f"bft release: {repo} {tag} at {commit.oid[:12]}")
    print(_load_line(repo, facts, tag))
    return 0


def _load_line(repo: str, facts: BuildFacts, tag: str) -> str:
    return (
        "Load it with:\n  from datasets import load_dataset; "
        f'ds = load_dataset("{repo}", "{facts.main_config}", revision="{tag}")'
    )


def _message(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
