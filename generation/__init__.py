"""bft.generation: from a corpus to backtranslated, curated and rewritten records.

Floors, bottom up: `errors`, `config`, `records`, `corpus` (I/O); `prompts`, `parsing`; `client` (one
endpoint); `stages`, `journal`, `engine`; `output`, `embedded`; `generate` and `cli` on top.
"""
