"""bft.builders: `bft generate` outputs packaged as `datasets` configs, cards and Hub releases.

Commands: `seed` (`bft seed`), `build` (`bft build`), `release` (`bft release`), `view` (`bft view`).
Below them:

- `seed_set`: Humpback's seed set from Open Assistant, or pairs as given;
- `bft_dataset`: the `datasets` builder over an output folder (its configs and features);
- `assemble`: a dataset folder built from an output, with its facts;
- `facts`: `BuildFacts`, what the card says, shared by build and release;
- `public`: local paths and private hosts in their public form, for every released file;
- `checks`: pre-release checks (PII counts, secrets, license);
- `report`: the data report (lengths, diversity, scores, source overlap, decontamination), each figure
  with how it was computed;
- `tagging`: InsTag-style tag counts per pair from a served tagger (response complexity);
- `analyses`: the optional analyses (MAUVE, tags) both `bft eval report` and `bft build` add;
- `mauve_comparison`: MAUVE between two configs' responses on a local model's features (BAFT Table 3);
- `instructions`: instruction sets (bft's own evaluation set, a file, a Hub dataset);
- `sources`: the one loader of a dataset given by a path or a Hub id;
- `view_data`: a folder's records read from parquet on demand, filtered, paged, sampled (`bft view`);
- `view_charts`: what the viewer draws (funnel, reasons, scores, lengths), as small bins and counts;
- `view_server`: the viewer's page and JSON API on 127.0.0.1 (the page itself is in `viewer/`);
- `versions`: repo ids and semantic versions of releases.
"""
