"""bft.generation.run: a run of the stages over a corpus, resumable, on one machine or a Ray cluster.

- `engine`: documents through the stages against the endpoints, with retries and bounds;
- `journal`: the append-only journals a rerun resumes from;
- `resume`: what the journals say is finished and pending, whether a folder may be resumed with a config
  (else the earlier run set aside), whether a whole run (or a Ray block) is finished;
- `stats`: `StageStats` and `RunStats`, what `stats.json` holds and every report reads;
- `money`: what a run costs: each priced stage's tokens at its price (batch discount), totals per currency;
- `progress`: one progress bar per stage, for both executors;
- `output`: journals turned into parquet configs in corpus order;
- `inputs`: what a run reads: the corpus through prepare, an earlier output's pool (Humpback's iteration,
  re-scored) or any instruction set (distill);
- `stages`: the run's stages, built once from its config;
- `servers`: the model servers a run starts itself (`serve:`, `--serve vllm`): resolved per stage and
  shared, placed on the GPUs, started, pointed at, described in `stats.json` and stopped;
- `served_in_turn`: each stage's model served in turn on the same GPUs (`serve.order: in_turn`);
- `ray_servers`: the servers of a Ray run, each replica in a Ray actor placed by Ray;
- `pools`: the endpoints a run sends to, probed, checked against the stages and pooled with their limits;
- `batching`: the stages sent as provider batches (`send: batch`): which batch, when it is sent, retries,
  and the ledger a rerun resumes pending batches from;
- `finishing`: stats, parquet configs and the card written from the journals, and the run's summary;
- `request_cache`: the request cache's files (one append-only writer per process, merged on read);
- `cached_replies`: its key (what decides a reply), the replies the engine reads from it and stores, and
  the cache a run opens;
- `dry_run`: `--dry-run`: what a run would send and cost, before anything is sent; `cache_plan`: how
  many of those requests the cache would answer;
- `local`: the local executor; `ray_executor`: the Ray executor.
"""
