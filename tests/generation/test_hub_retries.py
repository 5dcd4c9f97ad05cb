"""The Hub client's retry lines ("Retrying in 1s [Retry 1/5].") show only with `--verbose`.

A Hub test server that answers 503 to the first request for each file, as a busy Hub does, read by the
real `datasets` and `huggingface_hub` through `bft generate --dry-run` in a subprocess, as a user runs it.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.servers.hub import HubTestServer

RETRY_LINE = "Retrying in 1s [Retry 1/5]"


class BusyHub(HubTestServer):
    """Answers 503 the first time each file is downloaded; then serves it."""

    def __init__(self):
        super().__init__()
        self.refused: set[str] = set()

    def _handle(self, handler) -> None:
        if "/resolve/" in handler.path and handler.path not in self.refused:
            self.refused.add(handler.path)
            length = int(handler.headers.get("Content-Length") or 0)
            handler.rfile.read(length)
            return self._error(handler, 503, "Service temporarily unavailable")
        return super()._handle(handler)


@pytest.fixture
def busy_hub(tmp_path):
    from huggingface_hub import HfApi

    with BusyHub() as hub:
        rows = [{"id": f"d{i}", "text": f"Document {i}: a few words about bread."} for i in range(3)]
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        api = HfApi(endpoint=hub.url)
        api.create_repo("bft-org/busy", repo_type="dataset")
        api.upload_folder(repo_id="bft-org/busy", repo_type="dataset", folder_path=tmp_path / "data")
        hub.refused.clear()
        yield hub


@pytest.mark.parametrize("verbose", [False, True])
def test_hub_retry_lines_show_only_with_verbose(tmp_path, busy_hub, verbose):
    env = {**os.environ, "HF_ENDPOINT": busy_hub.url, "HF_HOME": str(tmp_path / "hf")}
    for variable in ("HF_HUB_VERBOSITY", "DATASETS_VERBOSITY"):  # as a user's shell has them (`bft` sets them
        env.pop(variable, None)  # in this process when a test calls its `main` quietly)
    command = [sys.executable, "-m", "bft.generation.cli", "generate", "bft-org/busy", "--out", str(tmp_path / "o")]
    command += ["--dry-run"] + (["--verbose"] if verbose else [])
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 records read; 3 would enter the first stage" in result.stdout
    assert busy_hub.refused  # the Hub did refuse, and the client retried
    assert (RETRY_LINE in result.stderr) is verbose, result.stderr[-3000:]
