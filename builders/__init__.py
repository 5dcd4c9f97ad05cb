"""bft.builders: `bft generate` outputs packaged as `datasets` configs, cards and Hub releases.

Commands: `seed` (`bft seed`), `build` (`bft build`), `release` (`bft release`). Below them:

- `seed_set`: Humpback's seed set from Open Assistant, or pairs as given;
- `bft_dataset`: the `datasets` builder over an output folder (its configs and features);
- `assemble`: a dataset folder built from an output, with its facts;
- `facts`: `BuildFacts`, what the card says, shared by build and release;
- `public_form`: local paths and private hosts in their public form, for every released file;
- `checks`: pre-release checks (PII counts, secrets, license);
- `report`: the data report (lengths, diversity, scores, source overlap, decontamination), each figure
  with how it was computed;
- `instag_counts`: InsTag-style tag counts per config from a served tagger (response complexity);
- `analyses`: the optional analyses (MAUVE, tags) both `bft eval report` and `bft build` add;
- `mauve_comparison`: MAUVE between two configs' responses on a local model's features (BAFT Table 3);
- `instructions`: instruction sets (bft's own evaluation set, a file, a Hub dataset);
- `sources`: the one loader of a dataset given by a path or a Hub id;
- `versions`: repo ids and semantic versions of releases.

The viewer (`bft view`) is not packaging: it is `bft.viewer`, a room of its own above this one.
"""
