"""Where a reply starts repeating itself (`text.first_repeat`, `text.RepeatFinder`): the cut a stage asks for
with `sampling.stop_on_repeat`, for a small model that loops on its answer until its token limit."""

import random

from bft.generation.text import RepeatFinder, first_repeat

# the shape measured on the demo: an answer, then the same paragraph again and again
ANSWER = "To make a virtual environment, run the venv module. It makes a separate Python for the project.\n\n"


def test_the_cut_is_the_start_of_the_first_sentence_or_line_said_again():
    assert first_repeat(ANSWER * 4, 20) == len(ANSWER)
    # a sentence repeated inside one paragraph, as the rice rewrite did
    text = "Rinse the rice until the water runs clear. Rinse the rice until the water runs clear. More"
    assert first_repeat(text, 20) == text.index("Rinse", 1)
    # lines: a list whose item comes again
    listing = "- Keep a regular sleep schedule\n- Avoid screens before bed\n- Keep a regular sleep schedule\n"
    assert first_repeat(listing, 20) == listing.index("- Keep", 1)


def test_what_is_not_a_loop_is_not_cut():
    assert first_repeat(ANSWER, 20) is None
    assert first_repeat("Stir well. Add salt. Stir well. Serve.", 20) is None  # short units may repeat
    assert first_repeat("A sentence that is long enough to count. A sentence that is long enough to count", 20) is None
    assert first_repeat("A sentence that is long enough to count. A sentence that is long enough, but not.", 20) is None
    assert first_repeat("Line.\n\n\n\nOther line.\n\n", 1) is None  # blank lines are not units


def test_a_reply_read_in_pieces_is_cut_where_the_whole_reply_is():
    """The stream reader feeds the text as it grows; the answer must not depend on how it was split."""
    rng = random.Random(7)
    texts = [ANSWER * 3, "Intro line.\n" + ANSWER + "Other.\n" + ANSWER, "No repeat here. At all.\n", "x. " * 50]
    for text in texts:
        whole = first_repeat(text, 5)
        for _ in range(50):
            finder, found, at = RepeatFinder(5), None, 0
            while at < len(text) and found is None:
                at = min(len(text), at + rng.randint(1, 12))
                found = finder.find(text[:at])
            assert found == whole, (text, at)
