"""Score, rewrite and instruction parsing: every reply gets a value or a named reason."""

import pytest

from bft.generation.method.parsing import parse_instruction, parse_rewrite, parse_score


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The answer is complete.\nScore: 5", 5),
        ("Score: 4", 4),
        ("Reasoning...\nScore: 3.", 3),
        ("Score: 2/5", 2),
        ("Score: 5.0", 5),
        ("**Score:** 4", 4),
        ("Score:1", 1),
        ("score: 3", 3),
        ("Score: 5 - a perfect answer", 5),
        ("First I thought Score: 2, but on reflection\nScore: 4", 4),  # the last one wins
        ("Score: 5\nOn second thought it misses a step.\nScore: 3\n", 3),
    ],
)
def test_score_is_the_last_score_line(reply, expected):
    parsed = parse_score(reply)
    assert parsed.ok and parsed.value == expected


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("It is a good answer, I would give it five.", "score_missing"),
        ("", "score_missing"),
        ("Score: 10", "score_out_of_range"),
        ("Score: 0", "score_out_of_range"),
        ("Score: 10502", "score_out_of_range"),
        ("Score: 91", "score_out_of_range"),
        ("Score: 5\nScore: 7", "score_out_of_range"),  # the last wins even when it is bad
        ("Score: <rating>", "score_unparseable"),
        ("Score: five", "score_unparseable"),
        ("Score: 4.5", "score_unparseable"),
        ("Score:", "score_unparseable"),
    ],
)
def test_bad_scores_are_rejected_with_a_reason(reply, reason):
    parsed = parse_score(reply)
    assert not parsed.ok and parsed.value is None and parsed.reason == reason


def test_word_score_inside_other_words_is_not_a_score_line():
    assert parse_score("underscore: 5").reason == "score_missing"


@pytest.mark.parametrize(
    ("reply", "finish", "stop", "expected"),
    [
        ("[RES] A clear answer. [/RES]", "stop", (), "A clear answer."),
        ("Sure! Here it is:\n[RES]\nLine one.\nLine two.\n[/RES]\nHope it helps.", "stop", (), "Line one.\nLine two."),
        ("[RES] draft one [/RES] then [RES] final [/RES]", "stop", (), "final"),
        ("[RES] cut at the stop sequence", "stop", ("[/RES]",), "cut at the stop sequence"),
        ("Return it between [RES] and [/RES].\n[RES] real [/RES]", "stop", (), "real"),
    ],
)
def test_rewrite_is_the_text_of_the_last_res_block(reply, finish, stop, expected):
    parsed = parse_rewrite(reply, finish, stop)
    assert parsed.ok and parsed.value == expected


@pytest.mark.parametrize(
    ("reply", "finish", "stop", "reason"),
    [
        ("No tags at all.", "stop", (), "rewrite_missing_tags"),
        ("[RES] never closed", "stop", (), "rewrite_unclosed"),
        ("[RES] cut by the token limit", "length", ("[/RES]",), "rewrite_truncated"),
        ("[RES]   [/RES]", "stop", (), "rewrite_empty"),
        ("[RES] outer [RES] inner [/RES] tail [/RES]", "stop", (), "rewrite_nested_tags"),
        ("only a closing tag [/RES]", "stop", (), "rewrite_missing_tags"),
    ],
)
def test_bad_rewrites_are_rejected_with_a_reason(reply, finish, stop, reason):
    parsed = parse_rewrite(reply, finish, stop)
    assert not parsed.ok and parsed.reason == reason


def test_instruction_rules():
    assert parse_instruction("  How do I descale a kettle?\n", "stop", 100).value == "How do I descale a kettle?"
    assert parse_instruction("   ", "stop", 100).reason == "instruction_empty"
    assert parse_instruction("How do I", "length", 100).reason == "instruction_truncated"
    assert parse_instruction("x" * 101, "stop", 100).reason == "instruction_too_long"
