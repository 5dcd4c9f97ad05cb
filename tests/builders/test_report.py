"""The data report's diversity, as BAFT measures it: distinct trigrams at equal numbers of rows."""

from bft.builders.report import data_report, unique_trigrams


def test_distinct_trigrams_are_counted_by_hand():
    # "a b c d" has trigrams (a,b,c), (b,c,d); "a b c" repeats (a,b,c): 2 distinct of 3
    assert unique_trigrams(["a b c d", "a b c"]) == (2, round(2 / 3, 4))
    assert unique_trigrams(["too short"]) == (0, 0.0)


def test_longer_responses_can_hold_more_distinct_trigrams_at_a_lower_share():
    """The share alone would call the longer data less diverse (its common opening repeats); BAFT's count does not."""
    short = [{"id": f"s{i}", "instruction": "q", "response": f"a{i} b{i} c{i} d{i}"} for i in range(20)]
    long = [
        {
            "id": f"l{i}",
            "instruction": "q",
            "response": f"one two three {i} " + " ".join(f"w{i}x{j}" for j in range(20)),
        }
        for i in range(20)
    ]
    report = data_report({"curated": short, "rewritten": long})
    by_name = {c["name"]: c for c in report["configs"]}
    assert by_name["rewritten"]["response_unique_trigram_count"] > by_name["curated"]["response_unique_trigram_count"]
    assert by_name["rewritten"]["response_unique_trigrams"] < 1.0 == by_name["curated"]["response_unique_trigrams"]
    assert by_name["curated"]["diversity_rows"] == by_name["rewritten"]["diversity_rows"] == 20
