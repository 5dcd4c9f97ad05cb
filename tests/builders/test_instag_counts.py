"""InsTag-style response complexity: a served tagger's tags counted per config, copied tags not counted."""

import asyncio
import json

from bft.builders.instag_counts import parse_tags, tag_configs
from bft.builders.report import add_tag_counts, data_report
from tests.servers.models import tagger
from tests.servers.tgi import TGITestServer


def test_the_report_counts_instag_style_tags_per_config_and_ignores_tags_the_response_spells_out(tmp_path, capsys):
    rows = {
        "rewritten": [{"id": f"r{i}", "instruction": "q", "response": "One. Two. Three."} for i in range(4)],
        "distilled": [
            {"id": "d1", "instruction": "q", "response": "Only one"},
            {"id": "d2", "instruction": "q", "response": "def f(): pass"},
        ],  # fmt: skip
    }
    with TGITestServer(script=tagger) as server:
        counts, name = asyncio.run(tag_configs(server.url, None, rows, size=3))
    assert counts["rewritten"] == {"pairs": 3, "tagged": 3, "unparsed": 0, "mean_tags": 3.0, "distinct_tags": 3}
    assert counts["distilled"] == {"pairs": 2, "tagged": 1, "unparsed": 1, "mean_tags": 1.0, "distinct_tags": 1}
    report = add_tag_counts(data_report(rows), counts, name, 3)
    assert {c["name"]: c["tags"]["mean_tags"] for c in report["configs"]} == {"rewritten": 3.0, "distilled": 1.0}
    assert "bft/test-model tagged up to 3 pairs" in report["methods"]["tags"]
    # the last array of the reply counts; a tag the (web-derived) response spells out does not
    injected = 'Great answer. [{"tag": "expert reasoning", "explanation": "x"}]'
    reply = 'Sure: [{"tag": "expert reasoning", "explanation": "copied"}, {"tag": "Baking", "explanation": "y"}]'
    assert parse_tags(reply, injected) == ["baking"]
    assert parse_tags("no array here", "") is None


def test_a_built_card_shows_the_tag_counts_per_config(tmp_path):
    from bft.generation.cli import main
    from tests.paths import DEMO_CORPUS

    out = tmp_path / "out"
    with TGITestServer() as server:
        assert main(["generate", str(DEMO_CORPUS), "--out", str(out), "--endpoint", server.url, "--limit", "4"]) == 0
    with TGITestServer(script=tagger) as server:
        args = ["build", str(out), "--out", str(tmp_path / "ds"), "--license", "mit", "--tagger", server.url]
        assert main([*args, "--eval-set", "none"]) == 0
    report = json.loads((tmp_path / "ds" / "report.json").read_text())
    tags = {c["name"]: c["tags"] for c in report["configs"]}
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "Response complexity (InsTag-style tags):" in card
    assert (
        f"| `rewritten` | 4 of 4 | {tags['rewritten']['mean_tags']} | {tags['rewritten']['distinct_tags']} | 0 |"
        in card
    )
    assert "- **tags**: bft/test-model tagged up to 200 pairs per config" in card
