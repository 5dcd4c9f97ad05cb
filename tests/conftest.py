"""Shared test set-up.

The Hub libraries read their environment at import, so it is set here, before any test imports them:
telemetry off, a private HF_HOME, and never the real Hub: `HF_ENDPOINT` points at our Hub test server
(`tests/servers/hub.py`), started here for the whole session; the `hub` fixture empties it for each test.
"""

import os
import tempfile
from pathlib import Path

_HOME = tempfile.mkdtemp(prefix="bft-tests-hf-")
os.environ.setdefault("HF_HOME", _HOME)
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.pop("HF_TOKEN", None)

from tests.servers.hub import session_server  # noqa: E402

HUB = session_server()
os.environ["HF_ENDPOINT"] = HUB.url

import pytest  # noqa: E402

from tests.paths import SHARED  # noqa: E402
from tests.servers.tgi import TGITestServer  # noqa: E402


@pytest.fixture
def tgi():
    with TGITestServer() as server:
        yield server


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(
            f"needs the project's shared data folder beside the repository ({SHARED}): real Dolma documents and the papers' text"
        )
    return SHARED


@pytest.fixture
def hub():
    """The session's Hub test server, emptied for this test."""
    HUB.reset()
    return HUB
