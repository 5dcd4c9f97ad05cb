"""Push a trained model folder to the Hub: one commit, then a release tag on exactly that commit.

Same rules as `bft release` for datasets: the repo id and tag are checked before training starts
(`check_push_target`), a tag is never moved, and the token comes from `HF_TOKEN` or the Hub login.
Checkpoints and the merged copy of a LoRA run stay local; the card (`README.md`) and the training
facts go with the weights.
"""

from __future__ import annotations

from bft.builders.versions import REPO_ID_RE, VERSION_RE
from bft.generation.errors import BftError, ConfigError

LOCAL_ONLY = ["checkpoint-*/**", "merged/**", "runs/**"]


def check_push_target(repo: str | None, tag: str | None) -> None:
    """Everything about a push that can be checked before training: names locally, the tag on the Hub."""
    if not repo:
        raise ConfigError("push_to_hub needs hub_model_id (ORG/NAME)")
    if not REPO_ID_RE.match(repo):
        raise ConfigError(f"hub_model_id {repo!r} is not a Hub repo id of the form ORG/NAME")
    if tag is None:
        return
    if not (tag.startswith("v") and VERSION_RE.match(tag[1:])):
        raise ConfigError(f"release_tag {tag!r} is not a version tag vX.Y.Z (e.g. v1.0.0)")
    if tag in existing_tags(repo):
        raise ConfigError(f"{repo} already has tag {tag}; a released model is never moved: choose a new release_tag")


def existing_tags(repo: str) -> set[str]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        return {ref.name for ref in HfApi().list_repo_refs(repo).tags}
    except RepositoryNotFoundError:
        return set()
    except HfHubHTTPError as error:
        raise BftError(f"cannot reach the Hub repo {repo}: {str(error).splitlines()[0]}") from None


def push_model(folder, repo: str, private: bool, tag: str | None, summary: str) -> str:
    """Commit `folder` to `repo` (created if needed, private if asked), tag it; returns the commit id."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    check_push_target(repo, tag)
    api = HfApi()
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo,
            folder_path=folder,
            commit_message=f"bft train: {tag or 'model'}",
            commit_description=summary,
            ignore_patterns=LOCAL_ONLY,
        )
        if tag:
            api.create_tag(repo, tag=tag, revision=commit.oid, tag_message=summary)
    except HfHubHTTPError as error:
        raise BftError(f"push of {repo} failed: {str(error).splitlines()[0]}") from None
    return commit.oid
