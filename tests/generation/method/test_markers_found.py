"""`find_markers` finds every marker the parser accepts, in any case and folded form, and nothing else.

It skips a pattern's scan when the text cannot hold its marker (no `score` in the case-folded text, no `[`):
these checks must never skip a marker the scan would find.
"""

import pytest

from bft.generation.method.markers import find_markers


@pytest.mark.parametrize("marker", ["Score", "SCORE", "sCoRe", "\u017fcore", "\uff33\uff43\uff4f\uff52\uff45"])
def test_a_score_marker_in_any_case_or_folded_form_is_found_where_it_starts(marker):
    assert find_markers(f"a note. {marker}: 5") == [("score", 8)]


def test_rewrite_markers_in_any_case_spacing_and_width_are_found():
    text = "x [RES] y [ res ] z [/RES] w [ / Res ] v \uff3bRES\uff3d"
    assert sorted(find_markers(text), key=lambda m: m[1]) == [
        ("[RES]", 2),
        ("[RES]", 10),
        ("[/RES]", 20),
        ("[/RES]", 29),
        ("[RES]", 41),
    ]


def test_a_text_without_markers_has_none():
    assert find_markers("A plain note about scores and [brackets], and a resume.") == []
