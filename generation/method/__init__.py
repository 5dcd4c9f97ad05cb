"""bft.generation.method: the papers' method, one stage at a time.

- `prompts`: the verbatim prompt templates (P1-P3, and distill) and their rendering;
- `markers`: the markers replies are parsed by, one definition for the parser and the escaper, and
  the copy check that tells a marker the model wrote from one it copied;
- `escaping`: the prompts' own markers neutralized inside untrusted text, reversibly;
- `stages`: backtranslate, curate, rewrite and distill: a request per record, and a `Verdict` per reply;
- `parsing`: instructions, scores, expected scores and `[RES]` blocks read from replies;
- `replies`: odd replies recognized before parsing (empty, echoing the prompt, another language);
- `fitting`: the context budget: how much of a prompt fits a model's context (prepare's check, before
  sending, after a refusal), and a document cut to fit;
- `filters`: the content filters (meta-text instructions, refusals, grounding thresholds);
- `tags`: Humpback's S_a/S_w tags and the SFT rows they go in.
"""
