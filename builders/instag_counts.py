"""Response complexity, InsTag-style: a served tagger model lists the skills and intentions of each pair.

BAFT compares datasets by how complex their samples are with InsTag (Lu et al. 2023), which tags each
sample with open-ended labels of the skills and intentions it involves; more tags, more complex. bft asks
any served model with a prompt of its own (`builders/prompts/instag.txt`) for a JSON array of
`{"tag", "explanation"}` objects per (instruction, response) pair and counts them, per config:

- `tagged`: pairs whose reply held a readable array (`unparsed`: the rest, counted, not guessed);
- `mean_tags`: the mean number of distinct tags per tagged pair (InsTag's complexity);
- `distinct_tags`: distinct tags over the config's tagged pairs (its diversity of intentions).

The pairs are the report's diversity sample (the same rows on every run), at most `size` per config. A
reply is read from its **last** JSON array; a tag the response itself spells out as a JSON `"tag": ...`
item is not counted (web text copied into the response must not set the count).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bft.builders.report import sample_by_id
from bft.generation.config import SamplingConfig
from bft.generation.endpoints.chat_batch import ask_endpoint
from bft.generation.method.prompts import load_template

TAGGER_PROMPT = Path(__file__).parent / "prompts" / "instag.txt"
ARRAY_RE = re.compile(r"\[\s*\{.*?\}\s*\]", re.S)
TAG_IN_TEXT_RE = re.compile(r'"tag"\s*:\s*"([^"]*)"')


def parse_tags(reply: str, response: str) -> list[str] | None:
    """The distinct tags of the reply's last JSON array of objects, less those the response spells out;
    None when no array can be read."""
    for candidate in reversed(ARRAY_RE.findall(reply or "")):
        try:
            items = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(items, list) and all(isinstance(i, dict) for i in items):
            copied = {t.strip().lower() for t in TAG_IN_TEXT_RE.findall(response or "")}
            tags = []
            for item in items:
                tag = str(item.get("tag", "")).strip().lower()
                if tag and tag not in tags and tag not in copied:
                    tags.append(tag)
            return tags
    return None


async def tag_configs(
    url: str, model: str | None, rows_by_config: dict[str, list[dict]], size: int, concurrency: int = 8
) -> tuple[dict[str, dict], str]:
    """Per config, the tag counts of its sampled pairs (module docstring), and the tagger's name."""
    template = load_template(str(TAGGER_PROMPT))
    sampling = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=512)
    samples = {
        name: sample_by_id([r for r in rows if r.get("response")], size) for name, rows in rows_by_config.items()
    }
    requests = [
        {"message": template.fill(instruction=row["instruction"], response=row["response"])}
        for rows in samples.values()
        for row in rows
    ]
    replies, tagger = await ask_endpoint(url, model, requests, sampling, concurrency, "tagging requests")
    counts, position = {}, 0
    for name, rows in samples.items():
        parsed = [parse_tags(replies[position + i], row["response"]) for i, row in enumerate(rows)]
        position += len(rows)
        tagged = [tags for tags in parsed if tags is not None]
        counts[name] = {
            "pairs": len(rows),
            "tagged": len(tagged),
            "unparsed": len(rows) - len(tagged),
            "mean_tags": round(sum(map(len, tagged)) / len(tagged), 2) if tagged else None,
            "distinct_tags": len({t for tags in tagged for t in tags}),
        }
    return counts, tagger or "tagger"
