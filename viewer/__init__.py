"""bft.viewer: `bft view`, a local web page over a generate output or a built dataset.

A room of its own because it packages nothing: it only reads what `bft generate` and `bft build` wrote
(parquet files, `stats.json`, a build's facts file) and shows it. It stands on top of `bft.generation`
and `bft.builders` (it reads their folders' layouts) and nothing imports it but `bft.generation.cli`'s
command table. Bottom up:

- `data`: a folder's records read from parquet on demand, filtered, paged, sampled, with each rewrite's
  grounding highlight;
- `charts`: what the page draws (funnel, reasons, scores, lengths), as small bins and counts;
- `server`: the page and its JSON API on 127.0.0.1 only, under a Content-Security-Policy;
- `command`: the `bft view` command (its arguments and `run`).

`static/` holds the page itself (`index.html`, `viewer.js`, `charts.js`, `viewer.css`: no CDN, works
offline), shipped as package data; `screenshot.png` is the README's picture of it.
"""
