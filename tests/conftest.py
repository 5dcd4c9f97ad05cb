"""Shared test set-up.

The Hub libraries read their environment at import, so it is set here, before any test imports them:
telemetry off, a private HF_HOME, a private request cache, and never the real Hub: `HF_ENDPOINT` points at our Hub test server
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
# bft's request cache: never the user's; each test gets its own below (session fixtures share this one)
os.environ["BFT_REQUEST_CACHE"] = tempfile.mkdtemp(prefix="bft-tests-requests-")

from tests.servers.hub import session_server  # noqa: E402

HUB = session_server()
os.environ["HF_ENDPOINT"] = HUB.url

import pytest  # noqa: E402

from tests.paths import SHARED  # noqa: E402
from tests.servers.tgi import TGITestServer  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """A fixture shared by several tests (module or session scope) makes its data with a request cache of its
    own, empty: two such fixtures script different models under the same name, and one's replies must not
    answer the other's requests."""
    if fixturedef.scope == "function":
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BFT_REQUEST_CACHE", tempfile.mkdtemp(prefix=f"bft-tests-requests-{fixturedef.argname}-"))
        yield


@pytest.fixture(autouse=True)
def request_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test its own request cache: bft's default one is shared by every run of a user's, and a test's
    replies must not answer another test's requests. Subprocesses inherit it through the environment."""
    path = tmp_path_factory.mktemp("request-cache")
    monkeypatch.setenv("BFT_REQUEST_CACHE", str(path))
    return path


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
