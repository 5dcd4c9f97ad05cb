"""HTML to text for Humpback's header segments: speed, and how much navigation and boilerplate each way keeps.

Each candidate turns one page into the blocks the segment rules work on (`segments.Block`: a header
`<h1>`-`<h6>` with its level, or text), and `header_segments` + the default `SegmentConfig` rules run on top,
as `bft generate` does with `segment.mode: headers`. Candidates:

- `stdlib`: the `html.parser.HTMLParser` loop bft had before (kept here, verbatim in behaviour, as the baseline);
- `selectolax`: the same walk over selectolax's Lexbor DOM (every text node, scripts and styles dropped);
- `selectolax-landmarks`: the same, less `<nav>`, `<header>`, `<footer>`, `<aside>`, `<form>` and elements
  with an ARIA navigation/banner/contentinfo/complementary role (what a hand-written rule would drop);
- `resiliparse`: `extract_plain_text(preserve_formatting="minimal_html")`, headers kept as `<hN>` tags;
- `resiliparse-main`: the same with `main_content=True` (Resiliparse's own boilerplate removal);
- `bft`: what `bft generate` does now (`segments.page_blocks(page, main_content=True)`): `resiliparse-main`
  without images' alt texts and readers' comment sections;
- `trafilatura`: `extract(output_format="markdown")`, headers read back from `#` lines.

Measures, over the pages:

- `ms/page`: mean wall time of HTML string to blocks (the segment rules, the same for all, are not timed);
- `content`: share of the annotated main-content snippets (`with`) found in the page's text;
- `boilerplate`: share of the annotated boilerplate snippets (`without`: menus, footers, "Impressum",
  share buttons, related links, cookie notices...) found in the page's text: navigation kept, lower is better;
- the same two shares in the kept segments: the headers and text of the segments the Humpback rules keep
  (what reaches the model);
- `headers`, `kept`: headers per page and segments kept per page (structure preserved).

Snippets are matched after collapsing whitespace. Pages and annotations are trafilatura's evaluation set
(Apache-2.0; `tests/evaldata.json` lists, for each page under `tests/eval/` or `tests/cache/`, strings that
belong to the main text and strings that do not, chosen by hand): these are real pages, mostly German and
English news, blogs and shop pages with their menus, sidebars and footers. Clone it and point `--tests` at it:

    git clone https://github.com/adbar/trafilatura /tmp/trafilatura   # measured at e90b0ef
    python benchmarks/html_to_text.py --tests /tmp/trafilatura/tests --pages 300

selectolax and trafilatura are not bft's dependencies: `pip install selectolax trafilatura lxml_html_clean`
for their rows (without them, their rows say "not installed"). `--tests DIR` with no `evaldata.json` times
every `*.html` under DIR (content and boilerplate columns empty).
"""

from __future__ import annotations

import argparse
import html as htmllib
import importlib.util
import json
import re
import statistics
import time
from html.parser import HTMLParser
from pathlib import Path

from bft.generation.config import SegmentConfig
from bft.generation.corpus import segments
from bft.generation.corpus.segments import Block, header_segments, verdict

HEADERS = {f"h{level}": level for level in range(1, 7)}
SKIPPED = {"script", "style", "noscript", "template"}
BLOCKS = {"p", "div", "br", "li", "tr", "table", "section", "article", "blockquote", "pre", "ul", "ol"}
LANDMARKS = {"nav", "header", "footer", "aside", "form"}
LANDMARK_ROLES = {"navigation", "banner", "contentinfo", "complementary"}


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.strip() for line in text.splitlines())).strip()


class _StdlibBlocks(HTMLParser):
    """bft's former `page_blocks`: headers and the text between them, in page order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks, self.parts, self.header_level, self.skipping = [], [], 0, 0

    def _flush(self):
        text = _tidy("".join(self.parts))
        if text or self.header_level:
            self.blocks.append(Block(self.header_level, text))
        self.parts = []

    def handle_starttag(self, tag, attrs):
        if tag in SKIPPED:
            self.skipping += 1
        elif tag in HEADERS:
            self._flush()
            self.header_level = HEADERS[tag]
        elif tag in BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in HEADERS and self.header_level:
            self._flush()
            self.header_level = 0
        elif tag in BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def stdlib_blocks(page: str) -> list[Block]:
    parser = _StdlibBlocks()
    parser.feed(page)
    parser.close()
    parser._flush()
    return parser.blocks


def selectolax_blocks(page: str, landmarks: bool = False) -> list[Block]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(page)
    blocks: list[Block] = []
    parts: list[str] = []

    def flush():
        text = _tidy("".join(parts))
        if text:
            blocks.append(Block(0, text))
        parts.clear()

    def walk(node):
        for child in node.iter(include_text=True):
            if child.is_text_node:
                parts.append(child.text_content or "")
                continue
            tag = child.tag
            if tag in SKIPPED or (
                landmarks and (tag in LANDMARKS or (child.attributes.get("role") or "") in LANDMARK_ROLES)
            ):
                continue
            if tag in HEADERS:
                flush()
                blocks.append(Block(HEADERS[tag], _tidy(child.text(separator=" "))))
            elif tag in BLOCKS:
                parts.append("\n")
                walk(child)
                parts.append("\n")
            else:
                walk(child)

    if tree.body is not None:
        walk(tree.body)
    flush()
    return blocks


def resiliparse_blocks(page: str, main_content: bool = False) -> list[Block]:
    from resiliparse.extract.html2text import extract_plain_text

    page = page.encode("utf-8", "replace").decode("utf-8")  # Resiliparse refuses lone surrogates
    minimal = extract_plain_text(page, preserve_formatting="minimal_html", main_content=main_content)
    blocks: list[Block] = []
    for number, piece in enumerate(re.split(r"<h([1-6])>(.*?)</h\1>", minimal, flags=re.DOTALL)):
        if number % 3 == 0:
            text = _tidy(htmllib.unescape(re.sub(r"<[^>]*>", "\n", piece)))
            if text:
                blocks.append(Block(0, text))
        elif number % 3 == 1:
            level = int(piece)
        else:
            blocks.append(Block(level, " ".join(htmllib.unescape(re.sub(r"<[^>]*>", " ", piece)).split())))
    return blocks


def trafilatura_blocks(page: str) -> list[Block]:
    import trafilatura

    markdown = trafilatura.extract(page, output_format="markdown", include_formatting=True) or ""
    blocks: list[Block] = []
    for chunk in re.split(r"\n(?=#{1,6} )", "\n" + markdown):
        match = re.match(r"(#{1,6}) (.*)\n?", chunk)
        if match:
            blocks.append(Block(len(match.group(1)), match.group(2).strip()))
            chunk = chunk[match.end() :]
        if chunk.strip():
            blocks.append(Block(0, _tidy(chunk)))
    return blocks


CANDIDATES = {
    "stdlib": stdlib_blocks,
    "selectolax": selectolax_blocks,
    "selectolax-landmarks": lambda page: selectolax_blocks(page, landmarks=True),
    "resiliparse": resiliparse_blocks,
    "resiliparse-main": lambda page: resiliparse_blocks(page, main_content=True),
    "bft": lambda page: segments.page_blocks(page, main_content=True),
    "trafilatura": trafilatura_blocks,
}
NEEDS = {"selectolax": "selectolax", "selectolax-landmarks": "selectolax", "trafilatura": "trafilatura"}


def load_pages(tests: Path, count: int) -> list[tuple[str, list[str], list[str]]]:
    """(html, with snippets, without snippets) for up to `count` pages, in the annotation file's order."""
    pages = []
    annotations = tests / "evaldata.json"
    if annotations.exists():
        for entry in json.loads(annotations.read_text(encoding="utf-8")).values():
            for folder in ("eval", "cache"):
                path = tests / folder / entry["file"]
                if path.exists():
                    pages.append((read(path), entry.get("with", []), entry.get("without", [])))
                    break
            if len(pages) >= count:
                break
    else:
        pages = [(read(path), [], []) for path in sorted(tests.rglob("*.html"))[:count]]
    return pages


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace")


def squash(text: str) -> str:
    return " ".join(text.split())


def found(snippets: list[str], text: str) -> tuple[int, int]:
    return sum(squash(s) in text for s in snippets), len(snippets)


def measure(name, blocks_of, pages, config, repeat):
    times, headers, kept = [], 0, 0
    with_found = with_all = without_found = without_all = kept_found = kept_good = 0
    for page, good, bad in pages:
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            blocks = blocks_of(page)
            best = min(best, time.perf_counter() - start)
        times.append(best)
        headers += sum(1 for b in blocks if b.level)
        text = squash("\n".join(b.text for b in blocks))
        kept_segments = [(h, body) for h, body in header_segments(blocks) if verdict(h, body, config) is None]
        kept_text = squash("\n".join(f"{header}\n{body}" for header, body in kept_segments))
        kept += len(kept_segments)
        hits, total = found(good, text)
        with_found, with_all = with_found + hits, with_all + total
        hits, total = found(bad, text)
        without_found, without_all = without_found + hits, without_all + total
        kept_found += found(bad, kept_text)[0]
        kept_good += found(good, kept_text)[0]
    share = lambda part, whole: f"{100 * part / whole:5.1f} %" if whole else "    -"  # noqa: E731
    return (
        f"{name:22} {1000 * statistics.mean(times):8.2f} {1000 * statistics.median(times):8.2f} "
        f"{share(with_found, with_all):>9} {share(without_found, without_all):>11} "
        f"{share(kept_good, with_all):>9} {share(kept_found, without_all):>11} "
        f"{headers / len(pages):8.1f} {kept / len(pages):6.2f}"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tests", type=Path, required=True, help="trafilatura's tests/ folder, or a folder of .html")
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="runs per page; the fastest counts")
    parser.add_argument("--only", nargs="*", choices=list(CANDIDATES), help="these candidates only")
    args = parser.parse_args(argv)
    pages = load_pages(args.tests, args.pages)
    size = statistics.mean(len(page) for page, _, _ in pages) / 1000
    print(f"{len(pages)} pages, {size:.0f} kB of HTML a page on average")
    print(f"{'':22} {'':8} {'':8} {'in the page text':^21} {'in kept segments':^21}")
    print(
        f"{'candidate':22} {'ms mean':>8} {'ms med':>8} {'content':>9} {'boilerplate':>11} "
        f"{'content':>9} {'boilerplate':>11} {'headers':>8} {'kept':>6}"
    )
    config = SegmentConfig()
    for name, blocks_of in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
            print(f"{name:22} not installed")
            continue
        print(measure(name, blocks_of, pages, config, args.repeat), flush=True)


if __name__ == "__main__":
    main()
