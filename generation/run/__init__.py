"""bft.generation.run: a run of the stages over a corpus, resumable, on one machine or a Ray cluster.

- `engine`: documents through the stages against the endpoints, with retries and bounds;
- `journal`: the append-only journals a rerun resumes from;
- `stats`: `StageStats` and `RunStats`, what `stats.json` holds and every report reads;
- `progress`: one progress bar per stage, for both executors;
- `output`: journals turned into parquet configs in corpus order;
- `rounds`: where a run that does not start with backtranslation reads: an earlier output's pool
  (Humpback's iteration, re-scored) or any instruction set (distill);
- `request_cache`: the request cache's files (one append-only writer per process, merged on read);
- `cached_replies`: its key (what decides a reply) and the replies the engine reads from it and stores;
- `dry_run`: `--dry-run`: what a run would send and cost, before anything is sent; `cache_plan`: how
  many of those requests the cache would answer;
- `wiring`: what every executor does around the engine (stages, pools, resume rule, finishing);
- `finished`: whether a run is finished, so that a rerun prints its summary with no server or request;
- `local`: the local executor; `ray_executor`: the Ray executor.
"""
