"""`bft view`: the data layer on a million rows, the server's guards, and the page driven in Debian's chromium."""

import io
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bft.generation.cli import main
from bft.generation.run.stats import stage_counts
from bft.viewer.charts import chart_data, word_counts
from bft.viewer.data import Filters, Folder, grounding_segments
from bft.viewer.server import STATIC, STATIC_FILES, ViewerServer
from tests.paths import DEMO_CORPUS
from tests.servers.models import Reply, document_of, paper_model, picky_model, prompt_kind
from tests.servers.tgi import TGITestServer

CHROMIUM = Path("/usr/bin/chromium")
# As root on a closed network: no sandbox, and none of chromium's own background connections.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]  # fmt: skip
ATTACK = "Water safety at home. Boil water for one minute to make it safe to drink, and store it covered."
MARKUP = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


def hostile_model(request):
    """picky_model, except that the instruction it writes for the water-safety page carries markup."""
    if prompt_kind(request.prompt) == "backtranslate" and "Water safety at home" in request.prompt:
        return Reply(f"{MARKUP} How do I make water safe to drink?")
    return picky_model(request)


def readme(configs: dict[str, str]) -> str:
    entries = "".join(
        f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {path}\n" for name, path in configs.items()
    )
    return f"---\nconfigs:\n{entries}---\n# test\n"


@pytest.fixture(scope="module")
def million(tmp_path_factory):
    """A folder with one config of 1,000,000 rows in row groups of 10,000."""
    folder = tmp_path_factory.mktemp("million")
    n = 1_000_000
    numbers = np.arange(n)
    table = pa.table(
        {
            "id": [f"doc-{i}" for i in range(n)],
            "status": np.where(numbers % 10 == 0, "rejected", "kept"),
            "score": (numbers % 5 + 1).astype(np.int64),
            "instruction": [f"Question number {i}" if i != 777_777 else "The one about zebras" for i in range(n)],
            "flags": [["previous_score:4"] if i % 1000 == 0 else [] for i in range(n)],
        }
    )
    (folder / "big").mkdir()
    pq.write_table(table, folder / "big" / "data.parquet", row_group_size=10_000)
    (folder / "README.md").write_text(readme({"big": "big/data.parquet"}))
    return folder


def test_a_million_rows_page_by_page_reading_only_the_groups_shown(million):
    folder = Folder(million)
    part = folder.part("big")
    assert part.rows == 1_000_000 and len(part.groups) == 100
    page = folder.page("big", "train", Filters(), offset=999_990, limit=10)
    assert page["total"] == 1_000_000 and [r["id"] for r in page["rows"]] == [f"doc-{i}" for i in range(999_990, 10**6)]
    assert part.groups_read == 1  # one row group of the hundred
    assert folder.page("big", "train", Filters(), offset=500_000, limit=3)["rows"][0]["_row"] == 500_000
    assert part.groups_read == 2
    # filters scan their columns only, and their matches page like the rest
    kept_5 = folder.page("big", "train", Filters(status="kept", min_score=5), offset=0, limit=2)
    assert kept_5["total"] == 200_000 and [r["id"] for r in kept_5["rows"]] == ["doc-4", "doc-9"]
    assert folder.page("big", "train", Filters(search="ZEBRAS"), limit=5)["rows"][0]["id"] == "doc-777777"
    assert folder.page("big", "train", Filters(flag="previous_score"), limit=1)["total"] == 1000
    sample = folder.sample("big", "train", Filters(status="rejected"), size=5, seed=1)
    assert len(sample["rows"]) == 5 and all(int(r["id"].split("-")[1]) % 10 == 0 for r in sample["rows"])
    assert part.facets()["status"] == {"kept": 900_000, "rejected": 100_000}


def test_grounding_marks_the_words_a_rewrite_shares_with_its_document():
    pieces = grounding_segments("Boil water for one minute, then relax!", "To be safe, boil water for one minute.")
    assert pieces == [["Boil water for one minute", True], [", then relax!", False]]
    assert "".join(text for text, _ in pieces) == "Boil water for one minute, then relax!"
    assert grounding_segments("nothing shared here", "completely different text") == [["nothing shared here", False]]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A small generate output: demo documents (some rejected at curation) and one with a hostile instruction."""
    root = tmp_path_factory.mktemp("view")
    corpus = root / "corpus.jsonl"
    corpus.write_text(DEMO_CORPUS.read_text() + json.dumps({"id": "attack", "text": ATTACK}) + "\n")
    out = root / "out"
    with TGITestServer(hostile_model) as server:
        assert main(["generate", str(corpus), "--out", str(out), "--endpoint", server.url, "--no-progress"]) == 0
    return out


def get(url: str, host: str | None = None):
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_the_server_answers_only_for_loopback_and_names_bad_requests(generated):
    with ViewerServer(generated) as server:
        status, headers, body = get(server.url + "api/summary")
        assert status == 200 and "default-src 'self'" in headers["Content-Security-Policy"]
        stats = json.loads((generated / "stats.json").read_text())
        assert json.loads(body)["stages"] == {
            k: v for k, v in stats.items() if isinstance(v, dict) and k != "endpoints"
        }
        assert get(server.url + "api/summary", host="evil.example:80")[0] == 403
        status, _, body = get(server.url + "api/rows?config=nope")
        assert status == 400 and "no config 'nope' split 'train' here (there are: backtranslated/train" in body.decode()
        status, _, body = get(server.url + "api/rows?config=curated&min_score=high")
        assert status == 400 and "filter min_score='high' is not a number" in body.decode()


def not_blank(png: bytes) -> bool:
    image = Image.open(io.BytesIO(png)).convert("L")
    histogram = image.histogram()
    return sum(1 for count in histogram if count) > 16 and max(histogram) < 0.97 * sum(histogram)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is needed (`apt-get install chromium`; `make test` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        yield launched
        launched.close()


def test_every_view_in_a_real_browser(generated, browser, tmp_path):
    stats = json.loads((generated / "stats.json").read_text())
    with ViewerServer(generated) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        def ready(view: str) -> None:
            page.wait_for_selector(f"body[data-ready=yes][data-view={view}]")

        def visit(route: str) -> None:  # the page rendered for exactly this route (not the one before)
            page.goto(server.url + route)
            page.wait_for_selector(f'body[data-ready=yes][data-route="{route}"]')

        def shot(name: str) -> None:
            png = page.screenshot(full_page=True)
            (tmp_path / f"{name}.png").write_bytes(png)
            assert not_blank(png), f"the {name} view looks blank"

        # summary: the run's counts, as stats.json has them
        page.goto(server.url)
        ready("summary")
        for stage in ("prepare", "backtranslate", "curate", "rewrite"):
            cells = page.locator(f"#stages tr[data-stage={stage}] td").all_inner_texts()
            assert cells[:4] == [stage, str(stats[stage]["entered"]), str(stats[stage]["kept"]),
                                 str(stats[stage]["rejected"])]  # fmt: skip
        reason_row = page.locator("#reasons tr[data-reason=score_below_threshold] td").all_inner_texts()
        assert reason_row == ["curate", "score_below_threshold", str(stats["curate"]["rejected"])]
        shot("summary")

        # the list: the rewritten config, page one
        page.click("#nav-records")
        ready("records")
        assert page.locator("#count").get_attribute("data-total") == str(stats["rewrite"]["kept"])
        assert page.locator("#rows tbody tr").count() == stats["rewrite"]["kept"]
        shot("records")

        # one record: document beside instruction, curation reply and score, the rewrite highlighted
        page.click("#rows tbody tr >> nth=0")
        ready("record")
        assert page.locator("#document").inner_text().startswith("The sky looks blue")
        assert page.locator("#instruction").inner_text().startswith("What should I know about")
        assert "Score: 5" in page.locator("#curation").inner_text() and "score 5" in page.locator("#score").inner_text()
        assert page.locator("#response mark").count() >= 1
        assert page.locator("#provenance tbody tr").count() == 3  # backtranslate, curate, rewrite
        shot("record")

        # rejected records by stage and reason, from the summary's link; the count matches stats.json
        visit("#summary")
        page.click("#reasons tr[data-reason=score_below_threshold] a")
        ready("records")
        assert page.locator("#count").get_attribute("data-total") == str(stats["curate"]["rejected"])
        assert set(page.locator("#rows tbody tr td:nth-child(5)").all_inner_texts()) == {"score_below_threshold"}
        shot("rejected")

        # full-text search finds the hostile record, whose markup shows as text and never runs
        page.fill("#q", "onerror")
        page.click("#apply")
        ready("records")
        assert page.locator("#count").get_attribute("data-total") == "1"
        assert MARKUP in page.locator("#rows tbody").inner_text()
        page.click("#rows tbody tr >> nth=0")
        ready("record")
        assert page.locator("#instruction").inner_text() == f"{MARKUP} How do I make water safe to drink?"
        assert page.locator("main img, main script").count() == 0
        assert page.evaluate("typeof window.__pwned") == "undefined"

        # filters by score, and a random sample among the matching rows
        visit("#records?part=backtranslated/train")
        page.click("#random")
        ready("records")
        assert re.match(r"10 rows drawn at random from \d+ matching", page.locator("#count").inner_text())
        assert page.locator("#rows tbody tr").count() == 10
        visit("#records?part=rejected/train&max_score=2&min_score=2")
        assert page.locator("#count").get_attribute("data-total") == str(stats["curate"]["rejected"])
        assert errors == []


def test_bft_view_serves_until_stopped(generated):
    command = [sys.executable, "-m", "bft.generation.cli", "view", str(generated), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+/)", line).group(1)
        status, headers, body = get(url)
        assert status == 200 and b"<title>bft view</title>" in body
        assert b"https://" not in body and b"http://" not in body.replace(b"http://www.w3.org", b"")  # nothing fetched
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_built_dataset_is_browsed_too(generated, tmp_path):
    folder = tmp_path / "ds"
    assert main(["build", str(generated), "--out", str(folder), "--license", "odc-by"]) == 0
    built = Folder(folder)
    parts = {(p["config"], p["split"]): p["rows"] for p in built.summary()["parts"]}
    assert {"backtranslated", "curated", "rewritten", "sft"} <= {config for config, _ in parts}
    sft = built.page("sft", "train", Filters(), limit=3)
    assert sft["total"] == parts[("sft", "train")] and len(sft["rows"]) == 3
    record = built.record("sft", "train", 0)["record"]
    assert record["prompt"][0]["role"] == "user" and record["completion"][0]["role"] == "assistant"
    kept = built.page("backtranslated", "train", Filters(status="kept"))["total"]
    assert kept == json.loads((folder / "stats.json").read_text())["curate"]["kept"]


def test_the_page_fetches_nothing_from_elsewhere():
    for name in ("index.html", *STATIC_FILES):
        text = (STATIC / name).read_text()
        assert not re.search(r"(?:src|href)=[\"']?(?:https?:)?//", text) and "@import" not in text, name
        assert "fetch(`http" not in text and "new WebSocket" not in text, name


# -- the charts, and rejected records headed by their stage -------------------------------------------

SPACES = " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2000\u2009\u200a\u2028\u202f\u205f\u3000"  # Python's, some
NOT_SPACES = "ab\x00\x01\x1b\u200b\u2060é日"  # control bytes, zero-width characters and other letters


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.text(alphabet=st.sampled_from(SPACES + NOT_SPACES), max_size=24))),
    st.integers(0, 3),
    st.booleans(),
)
def test_words_are_counted_as_str_split_counts_them(texts, cut, large):
    array = pa.array(texts, type=pa.large_string() if large else pa.string()).slice(cut)  # a slice: offsets
    counts, valid = word_counts(array)
    assert counts.tolist() == [len(t.split()) if t is not None else 0 for t in texts[cut:]]
    assert valid.tolist() == [t is not None for t in texts[cut:]]


def test_a_million_rows_are_charted_as_a_small_summary(million):
    charts = chart_data(Folder(million))
    instructions = charts["lengths"]["configs"][0]["fields"]["instruction"]
    assert sum(b["count"] for b in instructions["bins"]) == 1_000_000 and len(instructions["bins"]) <= 20
    assert instructions["min"] == 3 and instructions["max"] == 4  # "Question number N", "The one about zebras"
    assert len(json.dumps(charts)) < 5_000  # bins and counts go to the page, never rows


def staged_model(request):
    """Rejects at every stage and scores with probabilities: the tides page gets an empty backtranslation,
    water pages a low score, the Lisbon page a rewrite without its tags; instructions vary in length."""
    kind, prompt = prompt_kind(request.prompt), request.prompt
    if kind == "backtranslate":
        document = document_of(prompt)
        if document.startswith("Tides are caused"):
            return Reply("")
        return Reply("What should I know" + " and why" * (len(document) % 7) + "?")
    if kind == "curate":
        if "water" in prompt.lower():
            return Reply("Too vague.\nScore: 2", top={"2": {"2": 0.7, "3": 0.2, "5": 0.1}})  # expected 2.5
        if "The sky looks blue" in prompt:
            return Reply("Good.\nScore: 4", top={"4": {"4": 0.6, "5": 0.4}})  # expected 4.4
        return Reply("Clear.\nScore: 5", top={"5": {"5": 0.8, "4": 0.2}})  # expected 4.8
    if kind == "rewrite" and "Lisbon" in prompt:
        return Reply("An answer without its tags.")
    return paper_model(request)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """A generate output (expected scores) with rejects at prepare, backtranslate, curate and rewrite, and its
    `bft build` folder."""
    root = tmp_path_factory.mktemp("staged")
    lines = DEMO_CORPUS.read_text().splitlines()
    blank = {"id": "blank", "text": "   "}
    again = {"id": "again", "text": json.loads(lines[1])["text"]}  # the same text as the sky page
    (root / "corpus.jsonl").write_text("\n".join([*lines, json.dumps(blank), json.dumps(again)]) + "\n")
    out, built = root / "out", root / "ds"
    # in a thread of its own: the browser, started by an earlier test, runs an event loop in this one
    with TGITestServer(staged_model) as server, ThreadPoolExecutor(1) as thread:
        args = ["--out", str(out), "--endpoint", server.url, "--no-progress", "--score-mode", "expected"]
        assert thread.submit(main, ["generate", str(root / "corpus.jsonl"), *args]).result() == 0
        assert thread.submit(main, ["build", str(out), "--out", str(built), "--license", "odc-by"]).result() == 0
    return {"generate": out, "build": built}


def parquet_rows(folder: Path, config: str) -> list[dict]:
    return [row for path in sorted((folder / config).glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def scored_candidates(folder: Path, kind: str) -> list[dict]:
    """The candidates curation scored, read here from the parquet files (as the data report counts them)."""
    if kind == "build":
        return [r for r in parquet_rows(folder, "backtranslated") if r["status"] in ("kept", "rejected")]
    rejected = [r for r in parquet_rows(folder, "rejected") if r["stage"] == "curate"]
    return parquet_rows(folder, "curated") + rejected


def in_bins(values: list[float], bars: list[dict]) -> list[int]:
    """How many of `values` fall in each drawn bar, by the bar's own edges ([low, high), the last closed or
    open-topped)."""
    counts = []
    for number, bar in enumerate(bars):
        low, high, last = float(bar["low"]), bar.get("high"), number == len(bars) - 1
        inside = [v for v in values if round(v, 9) >= low and (high is None or round(v, 9) < float(high)
                                                              or last and round(v, 9) == float(high))]  # fmt: skip
        counts.append(len(inside))
    return counts


DRAWN = """() => [...document.querySelectorAll("figure.chart")].map((figure) => ({
  id: figure.id, kind: figure.dataset.chart, config: figure.dataset.config, field: figure.dataset.field,
  caption: figure.querySelector("figcaption").textContent,
  labelledby: (figure.querySelector("svg") || {getAttribute: () => ""}).getAttribute("aria-labelledby"),
  bars: [...figure.querySelectorAll("g.bar")].map((bar) => ({...bar.dataset,
    title: bar.querySelector("title").textContent, texts: [...bar.querySelectorAll("text")].map((t) => t.textContent)})),
  table: [...figure.querySelectorAll("table.chart-data tbody tr")].map((tr) => [...tr.cells].map((c) => c.textContent)),
}))"""


@pytest.mark.parametrize("kind", ["generate", "build"])
def test_the_summary_draws_the_funnel_reasons_scores_and_lengths(staged, browser, kind, tmp_path):
    folder = staged[kind]
    stats = stage_counts(json.loads((folder / "stats.json").read_text()))
    with ViewerServer(folder) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.goto(server.url)
        page.wait_for_selector("body[data-ready=yes][data-view=summary]")
        charts = {chart["id"]: chart for chart in page.evaluate(DRAWN)}
        png = page.locator("#charts").screenshot()
        (tmp_path / "charts.png").write_bytes(png)
        assert not_blank(png)

        # every chart: a caption, an image named by its title and a description, a title per bar, a table
        for chart in charts.values():
            assert chart["caption"] and len(chart["table"]) == len(chart["bars"]) > 0, chart["id"]
            assert all(bar["title"] for bar in chart["bars"]), chart["id"]
        funnel_text = "; ".join(f"{s}: {c['entered']} entered, {c['kept']} kept, {c['rejected']} rejected"
                                for s, c in stats.items())  # fmt: skip
        assert page.get_by_role("img", name=f"Stage funnel {funnel_text}").count() == 1  # its accessible name

        # the funnel: a bar per stage, its numbers those of stats.json
        funnel = charts["chart-funnel"]["bars"]
        assert [(b["stage"], int(b["entered"]), int(b["kept"]), int(b["rejected"])) for b in funnel] == [
            (stage, c["entered"], c["kept"], c["rejected"]) for stage, c in stats.items()
        ]
        assert [b["texts"] for b in funnel] == [[stage, f"{c['kept']} of {c['entered']}"] for stage, c in stats.items()]
        assert len(funnel) == 4 and funnel[0]["entered"] == "32" and funnel[-1]["kept"] == "20"

        # reasons: a bar per stage and reason, as many as stats.json counts
        reasons = {(b["stage"], b["reason"]): int(b["value"]) for b in charts["chart-reasons"]["bars"]}
        assert reasons == {(s, r): n for s, c in stats.items() for r, n in c["rejected_by_reason"].items()}
        assert set(reasons) == {("prepare", "empty_text"), ("prepare", "duplicate_text"),
                                ("backtranslate", "reply_empty"), ("curate", "score_below_threshold"),
                                ("rewrite", "rewrite_missing_tags")}  # fmt: skip

        # scores: one bar per whole score from the lowest to the highest; expected scores in quarter points
        candidates = scored_candidates(folder, kind)
        scores = charts["chart-scores"]["bars"]
        assert [b["label"] for b in scores] == ["2", "3", "4", "5"]
        assert {b["label"]: int(b["value"]) for b in scores} == {
            str(k): Counter(r["score"] for r in candidates)[k] for k in range(2, 6)
        }
        assert [int(b["value"]) for b in scores] == [7, 0, 1, 21]
        expected = charts["chart-expected"]["bars"]
        assert len(expected) == 12 and expected[0]["label"] == "2.00–2.25" and expected[-1]["label"] == "4.75–5.00"
        assert [int(b["value"]) for b in expected] == in_bins([r["expected_score"] for r in candidates], expected)
        assert {b["label"]: int(b["value"]) for b in expected if b["value"] != "0"} == {
            "2.50–2.75": 7, "4.25–4.50": 1, "4.75–5.00": 21,
        }  # fmt: skip

        # lengths: per config and field, every row counted in the bin its word count falls in
        lengths = [chart for chart in charts.values() if chart["kind"] == "length"]
        configs = {"backtranslated", "curated", "rewritten"} | ({"sft"} if kind == "build" else set())
        assert {chart["config"] for chart in lengths} == configs and len(lengths) == 2 * len(configs)
        for chart in lengths:
            rows = parquet_rows(folder, chart["config"])
            if chart["field"] in ("prompt", "completion"):
                words = [sum(len(turn["content"].split()) for turn in row[chart["field"]]) for row in rows]
            else:
                words = [len(row[chart["field"]].split()) for row in rows]
            drawn = [int(bar["value"]) for bar in chart["bars"]]
            assert sum(drawn) == len(rows) and drawn == in_bins(words, chart["bars"]), chart["id"]
        instructions = next(c for c in lengths if c["config"] == "curated" and c["field"] == "instruction")
        assert len([b for b in instructions["bars"] if b["value"] != "0"]) > 3  # lengths vary: several bars
        assert problems == []  # no script error, and nothing the Content-Security-Policy refused


def test_a_rejected_record_is_headed_by_the_stage_that_rejected_it(staged, browser):
    expected = {"prepare": "empty_text", "backtranslate": "reply_empty", "curate": "score_below_threshold",
                "rewrite": "rewrite_missing_tags"}  # fmt: skip
    with ViewerServer(staged["generate"]) as server:
        page = browser.new_page()

        def open_first(route: str) -> None:
            page.goto(server.url + route)
            page.wait_for_selector(f'body[data-ready=yes][data-route="{route}"]')
            page.click("#rows tbody tr >> nth=0")
            page.wait_for_selector("body[data-ready=yes][data-view=record]")

        for stage, reason in expected.items():
            open_first(f"#records?part=rejected/train&stage={stage}&reason={reason}")
            assert page.locator("#outcome").inner_text() == f"Rejected at {stage}: {reason}"
            assert page.locator("#outcome").get_attribute("data-stage") == stage
            # the curation block only where curation scored the record
            assert page.locator("#curation-block").is_visible() == (stage in ("curate", "rewrite"))
        open_first("#records?part=curated/train")
        assert (
            page.locator("#outcome").is_hidden()
            and page.locator("#score").inner_text() == "score 5 · expected 4.8 · kept"
        )
    with ViewerServer(staged["build"]) as server:  # a build's candidates carry the curation outcome
        page = browser.new_page()
        page.goto(server.url)
        page.wait_for_selector("body[data-ready=yes][data-view=summary]")
        assert page.locator("#reasons tr[data-reason=empty_text] a").count() == 0  # no rows of it were kept
        page.click("#reasons tr[data-reason=score_below_threshold] a")  # lists the candidates curation rejected
        page.wait_for_selector("body[data-ready=yes][data-view=records]")
        curate = json.loads((staged["build"] / "stats.json").read_text())["curate"]
        assert page.locator("#count").get_attribute("data-total") == str(curate["rejected"])
        page.click("#rows tbody tr >> nth=0")
        page.wait_for_selector("body[data-ready=yes][data-view=record]")
        assert page.locator("#outcome").inner_text() == "Rejected at curate: score_below_threshold"


def test_a_column_of_no_strings_is_counted_as_no_words():
    """A config whose text column is all null (stored as arrow's null type) charts nothing, not an error page."""
    words, valid = word_counts(pa.array([None, None]))
    assert words.tolist() == [0, 0] and not valid.any()
