"""Shared test set-up.

The Hub libraries read their environment at import, so it is set here, before any test imports them:
telemetry off, a private HF_HOME, and never the real Hub: `HF_ENDPOINT` points at our Hub test server
(`hub_server.py`), started here for the whole session; the `hub` fixture empties it for each test.
"""

import os
import sys
import tempfile
from pathlib import Path

_HOME = tempfile.mkdtemp(prefix="bft-tests-hf-")
os.environ.setdefault("HF_HOME", _HOME)
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.pop("HF_TOKEN", None)

sys.path.insert(0, str(Path(__file__).parent))

from hub_server import session_server  # noqa: E402

HUB = session_server()
os.environ["HF_ENDPOINT"] = HUB.url

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEMO_CORPUS = REPO / "generation" / "demo" / "corpus.jsonl"
DEMO_CONFIG = REPO / "generation" / "demo" / "demo.yaml"


@pytest.fixture
def tgi():
    from tgi_server import TGITestServer

    with TGITestServer() as server:
        yield server


@pytest.fixture
def shared_dir() -> Path:
    assert SHARED.is_dir(), f"tests need ../shared beside the repository ({SHARED})"
    return SHARED


@pytest.fixture
def hub():
    """The session's Hub test server, emptied for this test."""
    HUB.reset()
    return HUB
