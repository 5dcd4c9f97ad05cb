"""bft.generation: from a corpus to backtranslated, curated and rewritten records.

The floor map. bft is built in floors, and four rules keep them honest (`tests/test_layers.py`
checks each one against the imports):

1. **Commands are leaves.** A command module (`generate`, `cache`, `bft.builders.seed`, `~.build`, `~.release`,
   `bft.training.train`, `~.serve`, `~.evaluate`, `bft.viewer.command`) holds its arguments, `run` and
   printing. Only `cli` names it (its lazy table); nothing imports it. What two commands share lives below
   both.
2. **Folders stand in floors**, bottom up: `bft.cards` imports nothing of bft's other folders (facts
   in, text out); `bft.generation` nothing from `bft.builders` or `bft.training`; `bft.builders`
   nothing from `bft.training`; nothing imports `bft.viewer` (`bft view`, on top: it only reads what
   generate and build wrote). No import circle anywhere, and no import runs upward.
3. **A named ground floor** that every folder may use and that uses nothing above it: `errors` (the
   typed errors), `records` (documents, replies, stage records), `text` (words, n-grams, overlap,
   hashes), `layout` (the output folder: config names, journal and block paths, `stats.json`,
   which config to show first) and `reasons` (every rejection reason, with its kind and stages).
4. **bft's imports at the top of each module**; inside a function only heavy optional libraries
   (ray, matplotlib, torch, trl, transformers) and `cli`'s lazy table.

This folder, bottom up:

- the ground floor: `errors`, `records`, `text`, `layout`, `reasons`;
- `config`: the run configuration: typed, documented dataclasses (each choice a `Literal`, checked where it is
  declared), read from YAML files and overrides, checked across fields, and turned into CLI flags;
- `endpoints`: the HTTP transport, the protocols, the client, the retry policy, the endpoint pool and its
  concurrency, the embedded server, the engines bft starts itself (vLLM, SGLang);
- `method`: prompts, escaping, the stages and their verdicts, parsing, reply checks, fitting,
  filters, the S_a/S_w tags and SFT rows;
- `corpus`: files and rows (local, fsspec, Hub; JSONL, Parquet, HTML, WARC), ids and duplicates,
  header segments, prepare rules, the block plan, and the one document stream both executors read;
- `run`: the engine, journals and resume, stats, progress, output, inputs, the pieces every executor is
  made of (stages, pools, servers, finishing), the local and the Ray executor;
- on top: `generate` (the `bft generate` command), `cache` (`bft cache info|prune`) and `cli` (the `bft`
  dispatcher).
"""
