"""Each record's provenance names the server that answered: its kind, the version it says of itself and, for a
server bft started, the engine arguments bft passed it; a cached reply names the server that first gave it.

Where the servers say their version (what the test servers of `tests/servers/` serve):

- TGI: `GET /info`, whose `Info` schema has `version` ("TGI version"; TGI's OpenAPI document,
  https://huggingface.github.io/text-generation-inference/);
- vLLM: `GET /version`, `{"version": ...}` (vLLM's OpenAI-compatible server, checked against the real one in
  `tests/generation/endpoints/test_real_vllm.py`);
- SGLang: `GET /server_info` (`/get_server_info` before), its server arguments plus `version` (SGLang's native
  APIs, https://docs.sglang.ai/basic_usage/native_api.html).

The runs are whole `bft generate` commands against the TGI test server in its flavors, or against the stand-in
SGLang that bft starts by SGLang's own command line (`tests/servers/engine_stub.py`).
"""

from __future__ import annotations

import os

import pytest

from bft.builders.public_form import public_provenance
from bft.generation.cli import main
from bft.generation.layout import config_file, read_rows
from bft.generation.method.stages import Request
from bft.generation.records import Generation
from bft.generation.run.cached_replies import ReplyCache
from bft.generation.run.request_cache import RequestCache
from tests.paths import DEMO_CORPUS, REPO
from tests.servers import engine_stub, protocol
from tests.servers.tgi import TGITestServer

CONFIGS = ("backtranslated", "rejected")


def generate(*args) -> int:
    return main(["generate", *map(str, args), "--no-progress"])


def provenance_entries(out) -> list[dict]:
    """Every provenance entry of every record written (kept by backtranslation or rejected anywhere)."""
    return [entry for name in CONFIGS for row in read_rows(config_file(out, name)) for entry in row["provenance"]]


def servers_named(out) -> set[tuple]:
    return {(e["server"], e["server_version"], e["server_args"], e["cached"]) for e in provenance_entries(out)}


def test_a_record_from_tgi_names_the_version_its_info_gives_and_no_engine_arguments(tmp_path):
    out = tmp_path / "out"
    with TGITestServer() as server:
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 2) == 0
    assert servers_named(out) == {("tgi", protocol.TGI_VERSION, None, None)}


@pytest.fixture
def stub_sglang(tmp_path, monkeypatch):
    """`python -m sglang.launch_server` runs the stand-in (its package first on the path, the repository next)."""
    folder = engine_stub.install(tmp_path / "stub")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), str(REPO)]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: one replica, on the CPU
    return folder


def test_a_record_from_a_server_bft_started_names_its_version_and_the_arguments_it_passed(tmp_path, stub_sglang):
    out = tmp_path / "out"
    serve = ["--serve", "sglang", "--serve-model", "org/backward"]
    serve += ["--serve-arg=--context-length 2048", "--serve-arg=--download-dir /scratch/hf"]
    assert generate(DEMO_CORPUS, "--out", out, "--limit", 2, *serve) == 0
    args = "--context-length 2048 --download-dir /scratch/hf"
    assert servers_named(out) == {("sglang", protocol.SGLANG_VERSION, args, None)}
    # released: a local path among the arguments in its public form, as the model's own path is
    (entry, *_) = provenance_entries(out)
    assert public_provenance(entry)["server_args"] == "--context-length 2048 --download-dir hf"


def test_a_cached_reply_names_the_version_of_the_server_that_first_gave_it(tmp_path):
    """The same model on a vLLM, then on an SGLang: the second run is answered from the cache, and its records
    name the vLLM that gave the replies, not the SGLang it would have asked."""
    first, second = tmp_path / "first", tmp_path / "second"
    with TGITestServer(flavor="vllm") as vllm:
        assert generate(DEMO_CORPUS, "--out", first, "--endpoint", vllm.url, "--limit", 2) == 0
    assert servers_named(first) == {("vllm", protocol.VLLM_VERSION, None, None)}
    with TGITestServer(flavor="sglang") as sglang:
        assert generate(DEMO_CORPUS, "--out", second, "--endpoint", sglang.url, "--limit", 2) == 0
        assert sglang.requests == []  # every reply came from the cache
    assert servers_named(second) == {("vllm", protocol.VLLM_VERSION, None, True)}


def test_a_cache_entry_stored_before_versions_were_kept_names_no_version(tmp_path):
    store = RequestCache(tmp_path / "cache")
    replies = ReplyCache(store, run="earlier")
    generation = Generation("An instruction.", "stop")
    entry = {"kind": "reply", "top_n": 0, "generation": generation.__dict__, "server": "vllm", "endpoint": "http://a"}
    store.put("key", entry)  # (as stored before `server_version` and `server_args` were kept)
    found, source = replies.lookup("key", Request("raw", "a prompt"), [])
    replies.close()
    assert found == generation and (source.server_kind, source.version, source.server_args) == ("vllm", None, None)
