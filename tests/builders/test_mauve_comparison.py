"""BAFT's embedding-space comparison (Table 3) on small sets whose answer is known, features from SmolLM2."""

import json

import pytest

from bft.builders.mauve_comparison import compare_configs, mauve_between
from bft.generation.cli import main
from bft.generation.errors import ConfigError

BREAD = [
    {
        "id": f"b{i}",
        "response": f"For loaf {i}, mix flour, water, yeast and salt, knead, let it rise, then bake it hot.",
    }
    for i in range(40)
]
CODE = [
    {"id": f"c{i}", "response": f"def helper_{i}(items):\n    return sorted(set(items), key=len)  # unique strings"}
    for i in range(40)
]


@pytest.mark.slow
def test_identical_sets_score_one_disjoint_topics_near_zero_and_one_mix_in_between():
    same = mauve_between("bread", BREAD, "bread", BREAD)
    assert same.mauve == pytest.approx(1.0, abs=1e-3)
    assert same.p_rows == same.q_rows == 40 and same.buckets == 4 and same.features_model == "SmolLM2-135M-Instruct"
    apart = mauve_between("bread", BREAD[:20], "code", CODE[:20])
    assert apart.mauve < 0.05
    # two different samples of the same mixture: far closer than the two topics, not identical
    mixed = mauve_between("mix-a", BREAD[:20] + CODE[:20], "mix-b", BREAD[20:] + CODE[20:])
    assert apart.mauve * 10 < mixed.mauve < 1.0
    # the sample is picked by id, so the figure is the same on every run
    assert mauve_between("bread", BREAD[:20], "code", CODE[:20]).mauve == apart.mauve


def test_a_comparison_names_what_it_cannot_compare(tmp_path):
    rows = {"rewritten": BREAD[:1], "curated": BREAD}
    with pytest.raises(ConfigError, match="rewritten has 1 rows with a response; at least 2 are needed"):
        compare_configs(["rewritten,curated"], rows)
    with pytest.raises(ConfigError, match="has no config 'distilled' \\(it has: curated, rewritten\\)"):
        compare_configs(["curated,distilled"], rows)
    with pytest.raises(ConfigError, match="expected two configs, A,B"):
        compare_configs(["curated"], rows)
    with pytest.raises(ConfigError, match="no such folder"):
        compare_configs([f"curated,{tmp_path / 'nowhere'}:distilled"], rows)


@pytest.mark.slow
def test_the_report_compares_configs_of_two_outputs_and_says_how(tmp_path, capsys):
    from tests.paths import DEMO_CORPUS
    from tests.servers.models import Reply
    from tests.servers.tgi import TGITestServer

    out, distilled = tmp_path / "out", tmp_path / "distilled"
    with TGITestServer() as server:
        assert main(["generate", str(DEMO_CORPUS), "--out", str(out), "--endpoint", server.url, "--limit", "8"]) == 0
    with TGITestServer(lambda r: Reply("A short answer from memory, with no document behind it at all.")) as teacher:
        assert (
            main(["generate", str(out), "--out", str(distilled), "--endpoint", teacher.url, "--stages", "distill"]) == 0
        )
    args = ["eval", "report", str(out), "--mauve", f"rewritten,{distilled}:distilled", "--mauve", "curated,rewritten"]
    assert main([*args, "--out", str(tmp_path / "report.json"), "--eval-set", "none"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    to_distilled, to_documents = report["comparisons"]
    assert to_distilled["q"] == "distilled:distilled" and to_distilled["p_rows"] == to_distilled["q_rows"] == 8
    # the test model's rewrites copy the documents; the teacher's one answer is elsewhere
    assert to_distilled["mauve"] < 0.5 < to_documents["mauve"]
    assert "SmolLM2-135M-Instruct" in report["methods"]["mauve"] and "seed 25" in report["methods"]["mauve"]
    printed = capsys.readouterr().out
    assert f"MAUVE rewritten vs distilled:distilled: {to_distilled['mauve']:.4f}" in printed
    assert "how each figure was computed:" in printed
    # the dataset card shows the same comparison, config against config, and how it was computed
    args = ["build", str(out), "--out", str(tmp_path / "ds"), "--license", "mit", "--mauve", "curated,rewritten"]
    assert main([*args, "--mauve-size", "8"]) == 0
    card = (tmp_path / "ds" / "README.md").read_text()
    assert (
        "config against config (MAUVE" in card and f"| `curated` | `rewritten` | {to_documents['mauve']:.4f} |" in card
    )
    assert "- **mauve**: mauve-text on each response's last-token final hidden state from SmolLM2" in card
