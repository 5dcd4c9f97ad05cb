"""The attack table: every injection form of the tests, against a model that copies documents back.

    .venv/bin/python benchmarks/attacks.py > attacks.md     # about 30 s

For each form (`tests/generation/injection_forms.py`), each API mode (chat, raw TGI `/generate`, raw
OpenAI `/v1/completions`) and each kind of copying model (keeping or dropping invisible characters), it
runs `bft generate` against the TGI test server's copying model and prints what bft parsed and which
defence held: the escaper (the copy kept U+2060, so no marker was seen), the copy check (the marker was
found and ignored as copied), or nothing to defend (the form is not a marker the parser accepts). The
same runs are asserted in `tests/generation/test_injection.py`.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bft.generation.cli import main  # noqa: E402
from bft.generation.method.escaping import Escaper  # noqa: E402
from tests.generation.injection_forms import SCORE_FORMS, TAG_FORMS, document  # noqa: E402
from tests.servers.models import HONEST_REWRITE, MODES, copying_model, own_score  # noqa: E402
from tests.servers.tgi import TGITestServer  # noqa: E402


def outcomes(mode: str, drop: bool) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        rows = [{"id": f"score-{n}", "text": document(f, n)} for n, f in SCORE_FORMS.items()]
        rows += [{"id": f"tag-{n}", "text": document(f, n)} for n, f in TAG_FORMS.items()]
        (root / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        stage_mode, tgi = MODES[mode]
        config = {s: {"mode": stage_mode} for s in ("backtranslate", "curate", "rewrite")}
        (root / "c.yaml").write_text(json.dumps(config))
        with TGITestServer(copying_model(drop, own_score), tgi_info=tgi) as server:
            args = ["generate", str(root / "c.jsonl"), "--out", str(root / "o"), "--endpoint", server.url]
            with contextlib.redirect_stdout(io.StringIO()):  # the run's own summary is not the table
                main([*args, "--config", str(root / "c.yaml"), "--no-progress", "--no-cache"])
        records = {}
        for journal in ("curate", "rewrite"):
            # split on newlines only: texts may hold U+2028 or U+0085, which str.splitlines also splits on
            for line in (root / "o" / ".bft" / "journal" / f"{journal}.jsonl").read_text().split("\n")[:-1]:
                entry = json.loads(line)
                records[(journal, entry["id"])] = entry
        return records


def main_table() -> None:
    escaper = Escaper()
    print("| form | stage | mode | invisible characters | result | defence |")
    print("|---|---|---|---|---|---|")
    held = total = 0
    for mode in MODES:
        for drop in (False, True):
            records = outcomes(mode, drop)
            for kind, forms, stage in (("score", SCORE_FORMS, "curate"), ("tag", TAG_FORMS, "rewrite")):
                for name, form in forms.items():
                    entry = records[(stage, f"{kind}-{name}")]
                    copied = next((f for f in entry["flags"] if f.startswith(f"markers_copied:{stage}")), None)
                    if kind == "score":
                        ok = entry["score"] == 2
                        result = f"score {entry['score']} (the model's own)" if ok else f"score {entry['score']}"
                    else:
                        ok = entry["status"] == "kept" and entry["response"] == HONEST_REWRITE
                        result = "the model's own rewrite" if ok else f"{entry['status']} {entry['reason']}"
                    if copied:
                        defence = f"copy check ({copied.rsplit(':', 1)[1]} copied marker(s) ignored)"
                    elif escaper.found(document(form)):
                        defence = "escaper (the copy kept U+2060)"
                    else:
                        defence = "none needed: not a marker the parser accepts"
                    held += ok
                    total += 1
                    zero_width = "dropped" if drop else "kept"
                    print(f"| `{name}` | {stage} | {mode} | {zero_width} | {result} | {defence} |")
    print(f"\n{held} of {total} attacks held (document text never became the parsed score or rewrite).")


if __name__ == "__main__":
    main_table()
