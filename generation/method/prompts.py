"""The papers' prompt templates: loading, filling and formatting for chat or raw requests.

Templates live as files in `generation/method/prompts/`: a commented header naming the source and the
placeholders, a `---` line, then the paper's text verbatim. Placeholders are written as in the papers
(`<response>`, `<instruction>`, `<generated instruction>`, `<output>`) and declared in the header,
because P1 also contains `<rating>`, which is literal text the model is asked to replace.

Filling is a single pass over the *template*: a document that itself contains `<instruction>` is
inserted as it is and never re-scanned, so web text cannot trigger a second substitution.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bft.generation.errors import ConfigError

PROMPT_DIR = Path(__file__).parent / "prompts"
LLAMA2_OPEN = "[INST] "
LLAMA2_CLOSE = " [/INST]"


@dataclass(frozen=True)
class PromptTemplate:
    """One paper prompt.

    `text` is the paper's prompt exactly as printed (P2 and P3 include the Llama-2 `[INST]` wrapper,
    P1 does not). `sha256` identifies the template in every record's provenance.
    """

    name: str
    text: str
    source: str
    placeholders: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def fill(self, **values: str) -> str:
        """Return the paper's text with placeholders replaced (keys use `_` for spaces)."""
        wanted = {p: values.get(p.replace(" ", "_")) for p in self.placeholders}
        missing = [p for p, v in wanted.items() if v is None]
        if missing:
            raise ValueError(f"prompt {self.name!r} needs values for {missing}")
        pattern = re.compile("|".join(re.escape(f"<{p}>") for p in self.placeholders))
        return pattern.sub(lambda m: wanted[m.group(0)[1:-1]], self.text)

    def user_message(self, **values: str) -> str:
        """The text a chat endpoint receives as the user turn: the prompt without the `[INST]` wrapper.

        The server then applies the model's own chat template, which replaces the Llama-2 wrapper.
        """
        return strip_llama2_wrapper(self.fill(**values))

    def llama2_prompt(self, **values: str) -> str:
        """The raw prompt in the papers' Llama-2 form: `[INST] ... [/INST]`.

        P2 and P3 are printed with the wrapper and are returned byte-exact; P1 is printed without it
        and is wrapped the same way (the papers ran it on Llama-2 chat-tuned models).
        """
        filled = self.fill(**values)
        if filled.startswith(LLAMA2_OPEN) and filled.endswith(LLAMA2_CLOSE):
            return filled
        return f"{LLAMA2_OPEN}{filled}{LLAMA2_CLOSE}"


def strip_llama2_wrapper(text: str) -> str:
    if text.startswith(LLAMA2_OPEN) and text.endswith(LLAMA2_CLOSE):
        return text[len(LLAMA2_OPEN) : -len(LLAMA2_CLOSE)]
    return text


@cache
def load_template(name: str) -> PromptTemplate:
    """Load a shipped template by name (`backtranslate`, `curate`, `rewrite`, ...) or from a file path."""
    path = Path(name) if name.endswith(".txt") else PROMPT_DIR / f"{name}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in PROMPT_DIR.glob("*.txt"))
        raise ConfigError(f"unknown prompt template {name!r}: not a file and not one of {known}")
    raw = path.read_text(encoding="utf-8")
    header, sep, body = raw.partition("\n---\n")
    if not sep:
        raise ConfigError(f"prompt template {path} has no '---' line between its header and its text")
    if body.endswith("\n"):
        body = body[:-1]
    source = next((line.split(":", 1)[1].strip() for line in header.splitlines() if line.startswith("# source:")), "")
    declared = next((line.split(":", 1)[1] for line in header.splitlines() if line.startswith("# placeholders:")), None)
    if declared is None:
        raise ConfigError(f"prompt template {path} has no '# placeholders:' header line")
    placeholders = tuple(p.strip() for p in declared.split(",") if p.strip())
    absent = [p for p in placeholders if f"<{p}>" not in body]
    if absent:
        raise ConfigError(f"prompt template {path} declares placeholders {absent} that its text does not contain")
    return PromptTemplate(name=path.stem, text=body, source=source, placeholders=placeholders)
