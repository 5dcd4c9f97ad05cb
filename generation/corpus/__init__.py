"""bft.generation.corpus: what goes into a run, read the same way by both executors.

- `files`: which files a corpus is (a path, a folder, an fsspec URL, a Hub dataset) and how to open them;
- `rows`: the rows of one file, streamed (JSON lines, Parquet, HTML, WARC), unreadable lines as records;
- `documents`: rows as documents: ids, the duplicate-id rule, records without usable text;
- `segments`: Humpback's header segments of HTML pages, with every drop counted;
- `prepare`: the prepare rules (control characters, HTML, size, exact duplicates, context length);
- `blocks`: the corpus in blocks, and the corpus-wide decisions made before any block runs (Ray);
- `stream`: the one document stream both executors read (rows -> segments -> prepare);
- `diagnosis`: why no document got through, and what to check (a text field, the file format, a setting).
"""
