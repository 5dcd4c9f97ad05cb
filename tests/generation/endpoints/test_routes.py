"""An endpoint given with a route (`.../v1/chat/completions`, `.../generate`) is its server, said once."""

import json

import pytest

from bft.generation.cli import main
from tests.paths import DEMO_CORPUS
from tests.servers.tgi import TGITestServer


@pytest.mark.parametrize(
    ("flavor", "route"),
    [("vllm", "/v1/chat/completions"), ("tgi", "/v1/chat/completions/"), ("sglang", "/v1/completions"),
     ("tgi", "/generate")],
)  # fmt: skip
def test_an_endpoint_given_with_a_route_is_used_at_its_base_url_and_said_once(tmp_path, capsys, flavor, route):
    out = tmp_path / "o"
    with TGITestServer(flavor=flavor) as server:
        url = server.url + route
        args = ["generate", str(DEMO_CORPUS), "--out", str(out), "--limit", "3", "--no-progress"]
        args += ["--endpoint", url, "--stage-endpoint", f"curate={url}"]  # the same URL twice: one note
        assert main(args) == 0, capsys.readouterr().err[-2000:]
        routes = {r.route for r in server.requests}
    assert routes == {"/v1/chat/completions"}  # the stages' own route, not the one given with the URL
    assert json.loads((out / "stats.json").read_text())["rewrite"]["kept"] == 3
    err = capsys.readouterr().err
    note = f"bft generate: endpoint {url} names a route; using its server's base URL {server.url} (bft adds the routes"
    assert err.count(note) == 1


def test_a_base_url_with_v1_needs_no_note(tmp_path, capsys):
    with TGITestServer() as server:
        args = ["generate", str(DEMO_CORPUS), "--out", str(tmp_path / "o"), "--limit", "1", "--no-progress"]
        assert main([*args, "--endpoint", server.url + "/v1"]) == 0
    assert "names a route" not in capsys.readouterr().err
