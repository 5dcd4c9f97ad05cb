"""Pre-release checks: personal information in the text, secrets in any file, a license.

- **Personal information**: e-mail addresses, phone numbers and IP addresses are counted in the
  `instruction` and `response` of every row (and optionally replaced by `<EMAIL>`, `<PHONE>`, `<IP>`:
  `redact_text`). Counts go into the dataset card.
- **Secrets**: no file of the dataset folder may hold a string that looks like an access token
  (Hugging Face `hf_...`, OpenAI `sk-...`, AWS `AKIA...`, GitHub `ghp_...`, a private key block).
  Parquet files are scanned through their text columns. A finding blocks the release.
- **License**: the card must name one; `unknown` blocks the release.

The patterns favour recall on the common forms; they are heuristics and the card says so.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

PII_PATTERNS = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "phone": re.compile(
        r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{4}(?!\w|\.\d)"
    ),
    "ip": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
}
PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP>"}
SECRET_PATTERNS = {
    "huggingface_token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "openai_key": re.compile(r"\bsk-[A-Za-z0-9_-]{32,}\b"),
    "aws_access_key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "github_token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "private_key": re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH )?PRIVATE KEY-----"),
}
PII_FIELDS = ("instruction", "response")


@dataclass
class Findings:
    """What the checks found; `blocking` lists what stops a release."""

    pii: dict[str, Counter] = field(default_factory=dict)  # config -> kind -> matches
    redacted: bool = False
    secrets: list[str] = field(default_factory=list)  # "file: kind"
    license: str | None = None

    @property
    def blocking(self) -> list[str]:
        problems = [f"secret-looking string in {s}" for s in self.secrets]
        if not self.license or self.license == "unknown":
            problems.append("no license: pass --license when building (the source corpus's, e.g. odc-by for Dolma)")
        return problems

    @classmethod
    def from_dict(cls, data: dict) -> Findings:
        return cls(
            pii={k: Counter(v) for k, v in data["pii"].items()},
            redacted=data["pii_redacted"],
            secrets=list(data["secrets"]),
            license=data["license"],
        )

    def as_dict(self) -> dict:
        return {
            "pii": {config: dict(counts) for config, counts in self.pii.items()},
            "pii_redacted": self.redacted,
            "secrets": self.secrets,
            "license": self.license,
        }


def count_pii(text: str | None) -> Counter:
    counts: Counter = Counter()
    if text:
        for kind, pattern in PII_PATTERNS.items():
            counts[kind] += len(pattern.findall(text))
    return counts


def redact_text(text: str | None) -> str | None:
    if not text:
        return text
    for kind, pattern in PII_PATTERNS.items():
        text = pattern.sub(PLACEHOLDERS[kind], text)
    return text


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def scan_secrets(folder: Path) -> list[str]:
    """Every file under `folder` whose text (or Parquet text columns) matches a secret pattern."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        kinds = set()
        if path.suffix == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
                for row in batch.to_pylist():
                    for text in _strings(row):
                        kinds.update(k for k, pattern in SECRET_PATTERNS.items() if pattern.search(text))
        elif path.suffix != ".png":
            text = path.read_bytes().decode("utf-8", "replace")
            kinds.update(k for k, pattern in SECRET_PATTERNS.items() if pattern.search(text))
        found.extend(f"{path.relative_to(folder)}: {kind}" for kind in sorted(kinds))
    return found
