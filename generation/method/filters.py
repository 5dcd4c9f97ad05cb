"""Content filters on parsed model output: degenerate instructions, refusals, ungrounded rewrites.

Each filter is a rule the stages apply to what they parsed (`method/stages.py` names the reasons):

- `matches_any(instruction, backtranslate.meta_patterns)`: instructions that talk about the task
  ("the most likely question", "the text below", "instruction backtranslation") are rejected
  `instruction_meta_text` (`config.DEFAULT_META_PATTERNS`);
- `copy_overlap(instruction, document)` above `backtranslate.max_copy_overlap`: under-trained
  backward models copy the document instead of asking about it (method.md, section 4):
  `instruction_copies_document`;
- `matches_any(response, rewrite.refusal_patterns)`: a rewrite that declines ("I'm sorry, but I
  cannot ...") is rejected `rewrite_refusal` (`config.DEFAULT_REFUSAL_PATTERNS`);
- `grounding(response, document)` under `rewrite.min_grounding` (when set): `rewrite_ungrounded`.

The overlap measures themselves are text measures of the ground floor (`generation/text.py`).
"""

from __future__ import annotations

import re


def matches_any(text: str, patterns: list[str]) -> bool:
    """Whether `text` matches one of `patterns` (case-insensitive; `^` anchors at the start of the text)."""
    return any(re.search(p, text or "", re.IGNORECASE) for p in patterns)
