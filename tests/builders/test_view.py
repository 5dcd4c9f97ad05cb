"""`bft view`: the data layer on a million rows, the server's guards, and the page driven in Debian's chromium."""

import io
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from bft.builders.view_data import Filters, Folder, grounding_segments
from bft.builders.view_server import ViewerServer
from bft.generation.cli import main
from tests.builders.test_build import picky_model
from tests.paths import DEMO_CORPUS
from tests.servers.tgi import Reply, TGITestServer, prompt_kind

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
    from bft.builders.view_server import STATIC

    for name in ("index.html", "viewer.js", "viewer.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"(?:src|href)=[\"']?(?:https?:)?//", text) and "@import" not in text, name
        assert "fetch(`http" not in text and "new WebSocket" not in text, name
