"""`bft view DIR`: browse a generate output or a built dataset in a local web page.

    bft view OUTDIR [--port 8765] [--open]

The page (served on 127.0.0.1 only, working offline: no CDN, no font or script from elsewhere) draws the
stage funnel, reject reasons, curation and expected scores and each config's instruction and response
lengths (`viewer/charts.py`, inline SVG), shows the run's counts beside `stats.json`, every
config's records page by page, each record's document beside its instruction, the curation reply and
score, the rewrite with the words it shares with the document highlighted (grounding), rejected records
by stage and reason (each headed by the stage that rejected it), flags and provenance. Filters: config,
status, stage, reason, score range, flag, full-text search; a button draws a random sample. Rows are read
from the parquet files on demand (`viewer/data.py`), so a million-row folder opens as fast as a
small one. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import threading
import webbrowser
from pathlib import Path

from bft.viewer.server import ViewerServer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="A `bft generate` output folder or a `bft build` dataset folder")
    parser.add_argument("--port", type=int, default=8765, help="Port on 127.0.0.1 (default 8765; 0: any free one)")
    parser.add_argument("--open", action="store_true", help="Open the page in the default browser")


def run(args: argparse.Namespace) -> int:
    with ViewerServer(Path(args.folder), port=args.port) as server:
        print(f"bft view: {Path(args.folder).resolve().name} at {server.url}  (Ctrl-C to stop)", flush=True)
        if args.open:
            webbrowser.open(server.url)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("bft view: stopped")
    return 0
