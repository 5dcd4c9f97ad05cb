"""Humpback's header segments: golden pages, WARC input, and every drop counted through `bft generate`."""

import io
import json

import pytest
import yaml
from datasets import load_dataset

from bft.generation.cli import main
from bft.generation.config import SegmentConfig
from bft.generation.corpus.documents import read_corpus
from bft.generation.corpus.segments import (
    Block,
    Segmenter,
    has_repeated_sentences,
    header_segments,
    is_navigation,
    page_blocks,
)

TOPICS = ["basil", "tomatoes", "compost", "seedlings", "mulch", "pruning", "watering", "aphids", "soil", "frost"]


def prose(topic: str, sentences: int) -> str:
    """Distinct sentences about `topic` (each shares little with the others)."""
    return " ".join(
        f"Note {i} on {topic}: {TOPICS[i % 10]} and {TOPICS[(i * 3 + 1) % 10]} matter in week {i * 7 + 2} of the season."
        for i in range(sentences)
    )


PAGE = f"""<html><head><title>Garden notes</title><style>.x {{color: red}}</style></head><body>
<h1>Growing herbs at home</h1>
<p>{prose("herbs", 4)}</p>
<h2>Basil on a windowsill</h2>
<p>{prose("basil", 12)}</p>
<h3>Pinching the tops</h3>
<p>{prose("pinching", 6)}</p>
<h2>QUICK TIPS</h2>
<p>{prose("tips", 12)}</p>
<h2>Free newsletter</h2>
<p>{prose("newsletter", 12)}</p>
<h2></h2>
<p>{prose("nothing", 12)}</p>
<h2>Watering schedule</h2>
<p>{"Water the pots every morning before the sun is high. " * 12}</p>
<h2>Short note</h2>
<p>Only a line.</p>
<h2>Everything about soil</h2>
<p>{prose("soil", 60)}</p>
<script>var tracking = "Water the pots";</script>
</body></html>"""


def test_segments_follow_headers_and_include_sub_headers():
    segments = dict(header_segments(page_blocks(PAGE)))
    basil = segments["Basil on a windowsill"]
    assert "Note 0 on basil" in basil and "Pinching the tops" in basil and "Note 5 on pinching" in basil
    assert "QUICK TIPS" not in basil  # the next header of the same level ends it
    assert (
        "Note 0 on herbs" in segments["Growing herbs at home"] and "Note 0 on soil" in segments["Growing herbs at home"]
    )
    assert "tracking" not in "".join(segments.values())  # scripts are not text


def test_each_rule_drops_with_its_reason():
    page = {"id": "p", "text": PAGE}
    fates = {}
    for item in Segmenter(SegmentConfig())(read_corpus_items([page])):
        fates[item.id] = getattr(item, "reason", "kept")
    assert fates == {
        "p#1": "segment_too_long",  # h1 holds the whole page
        "p#2": "kept",  # basil, with its sub-header
        "p#3": "segment_too_short",  # pinching alone: six sentences
        "p#4": "uppercase_header",
        "p#5": "navigation_header",
        "p#6": "empty_header",
        "p#7": "repeated_sentences",
        "p#8": "segment_too_short",
        "p#9": "segment_too_long",
    }


def read_corpus_items(rows):
    from bft.generation.records import Document

    return [Document(r["id"], r["text"], None, None, "test", i) for i, r in enumerate(rows)]


def test_repeated_sentences_by_trigram_jaccard():
    assert has_repeated_sentences("Buy now and save. Buy now and save big.", 0.5)
    assert not has_repeated_sentences(prose("x", 8), 0.8)


def write_warc(path, pages):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for url, html in pages:
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            record = writer.create_warc_record(url, "response", payload=io.BytesIO(html.encode()), http_headers=headers)
            writer.write_record(record)


def test_warc_pages_are_read_with_their_urls(tmp_path):
    write_warc(
        tmp_path / "crawl.warc.gz",
        [("https://garden.example/herbs", PAGE), ("https://garden.example/empty", "<p>No headers.</p>")],
    )
    pages = list(read_corpus(str(tmp_path / "crawl.warc.gz")))
    assert [p.url for p in pages] == ["https://garden.example/herbs", "https://garden.example/empty"]
    assert pages[0].id.startswith("<urn:uuid:") and "<h2>Basil" in pages[0].text


def test_header_segments_end_to_end(tmp_path, tgi):
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "garden.html").write_text(PAGE)
    (tmp_path / "pages" / "flat.html").write_text("<p>A page with text but no header at all.</p>")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"segment": {"mode": "headers"}}))
    args = [
        "generate",
        str(tmp_path / "pages"),
        "--out",
        str(tmp_path / "o"),
        "--endpoint",
        tgi.url,
        "--config",
        str(config),
    ]
    assert main([*args, "--no-progress"]) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["prepare"]["entered"] == 10  # 9 segments and 1 page without headers, each accounted for
    assert stats["prepare"]["rejected_by_reason"] == {
        "empty_header": 1,
        "navigation_header": 1,
        "no_header_segments": 1,
        "repeated_sentences": 1,
        "segment_too_long": 2,
        "segment_too_short": 2,
        "uppercase_header": 1,
    }
    (row,) = load_dataset(str(tmp_path / "o"), "rewritten", split="train")
    assert row["id"].endswith("garden.html#2") and row["document"].startswith("Note 0 on basil")
    assert "header:Basil on a windowsill" in row["flags"]


@pytest.mark.parametrize(
    ("header", "navigation"),
    [
        ("Quick Links", True),
        ("Comments (12)", True),
        ("Menu", True),
        ("Free newsletter", True),
        ("Menu planning for a busy week", False),
        ("Forum etiquette for new members", False),
        ("Categories of sourdough", False),
    ],
)
def test_navigation_headers_are_matched_as_whole_phrases(header, navigation):
    assert is_navigation(header, SegmentConfig().navigation_headers) is navigation


SITE_PAGE = f"""<!doctype html><html><head><title>Garden notes</title></head><body>
<header class="site-header"><a href="/">Garden notes</a>
<nav class="main-menu"><ul><li><a href="/">Home</a></li><li><a href="/herbs">Herbs and spices</a></li>
<li><a href="/tools">Garden tools</a></li><li><a href="/about">About the editors</a></li></ul></nav></header>
<div class="breadcrumbs"><a href="/">Home</a> &rsaquo; <a href="/herbs">Herbs and spices</a></div>
<main><article><h1>Growing basil</h1>
<h2>Sowing basil indoors</h2>
<p>{prose("basil", 8)}</p>
<h2>Pinching the tops</h2>
<p><img src="top.jpg" alt="A basil plant photographed from above"></p>
<p>{prose("pinching", 8)}</p>
<div id="comments" class="comments-area"><h2 class="comments-title">Reader comments</h2><ol class="comment-list">
<li class="comment"><p class="comment-content">Lovely post, my grandmother grew basil on her sill too.</p></li>
<li class="comment"><p class="comment-content">Thanks for sharing these tips about the tops!</p></li></ol></div>
</article></main>
<aside class="sidebar"><h3>Popular posts</h3><ul><li><a href="/a">Ten tomato mistakes to avoid</a></li>
<li><a href="/b">Winter compost for beginners</a></li></ul></aside>
<footer class="site-footer"><ul><li><a href="/imprint">Imprint and privacy policy</a></li>
<li><a href="/cookies">Cookie settings</a></li></ul><p>Copyright 2026 Garden Notes Publishing</p></footer>
</body></html>"""
FURNITURE = ["Herbs and spices", "About the editors", "Ten tomato mistakes", "Cookie settings", "Copyright 2026"]
FURNITURE += ["Reader comments", "my grandmother", "photographed from above"]  # comments, an image's alt text


def test_menus_sidebars_and_footers_stay_out_of_the_segments():
    """The library's main-content extraction leaves out the site's furniture and readers' comments."""
    items = list(Segmenter(SegmentConfig(min_chars=100))(read_corpus_items([{"id": "p", "text": SITE_PAGE}])))
    kept = {item.id: item for item in items if not hasattr(item, "reason")}
    assert [flag for item in kept.values() for flag in item.flags] == [
        "header:Growing basil",
        "header:Sowing basil indoors",
        "header:Pinching the tops",
    ]
    everything = "\n".join(item.text if hasattr(item, "text") else item.raw for item in items)
    assert "Note 7 on pinching" in everything
    assert not [furniture for furniture in FURNITURE if furniture in everything]


def test_escaped_markup_is_text_and_never_a_header():
    """The page's `&lt;h2&gt;` is text; only the page's own `<h2>` elements make headers."""
    blocks = page_blocks("<h2>Real &lt;/h2&gt; header</h2><p>Write &lt;h2&gt;Fake&lt;/h2&gt; &amp; more.</p>")
    assert [(b.level, b.text) for b in blocks] == [(2, "Real </h2> header"), (0, "Write <h2>Fake</h2> & more.")]


def test_broken_and_odd_html_is_read_as_a_browser_reads_it():
    """Unclosed paragraphs, a stray end tag, an unclosed header, lone surrogates, an empty header, no page."""
    blocks = page_blocks("<h2>Soil</h3><p>Loam holds water.<p>Sand drains it.</div><h3>Clay\ud800<p>Heavy")
    assert [(b.level, b.text) for b in blocks] == [
        (2, "Soil"),
        (0, "Loam holds water.\n\nSand drains it."),
        (3, "Clay? Heavy"),  # an unclosed header holds what follows, as in a browser; a lone surrogate is "?"
    ]
    assert page_blocks('<H2 class="x"></H2><p>Under an empty header.</p>') == [
        Block(2, ""),
        Block(0, "Under an empty header."),
    ]
    assert page_blocks("") == [] and page_blocks("plain text, no markup") == [Block(0, "plain text, no markup")]
