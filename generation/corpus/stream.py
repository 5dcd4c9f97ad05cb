"""The one document stream both executors read: rows -> documents -> header segments -> prepare rules.

`bft generate` reads the whole corpus in one process (`run/local.py`); `--executor ray` reads it in
blocks on actors (`run/ray_executor.py`, `corpus/blocks.py`). Both turn what they read into the items
the stage engine takes through this module, so a document is segmented, cleaned, deduplicated and
checked against the context budget the same way wherever it was read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from bft.generation.config import GenerateConfig
from bft.generation.corpus.documents import read_corpus
from bft.generation.corpus.prepare import Preparer
from bft.generation.corpus.segments import Segmenter
from bft.generation.records import Document, Rejected

Items = Iterable[Document | Rejected]


def segmenter(config: GenerateConfig) -> Callable[[Items], Items]:
    """Humpback's header segments when `segment.mode` is `headers`, else the documents as they are."""
    return Segmenter(config.segment) if config.segment.mode == "headers" else (lambda items: items)


def document_stream(
    items: Items, config: GenerateConfig, fits=None, duplicates: set[int] | None = None
) -> Iterator[Document | Rejected]:
    """`items` as read, segmented and put through the prepare rules.

    `fits(text)` is the context check (`method/fitting.context_check`); `duplicates`, the positions whose
    text came earlier in the corpus, when a block plan decided them (else prepare decides as it reads).
    """
    return Preparer(config.prepare, fits, duplicates=duplicates)(segmenter(config)(items))


def corpus_documents(config: GenerateConfig, fits=None) -> Iterator[Document | Rejected]:
    """The whole configured corpus, read in order, as the document stream."""
    return document_stream(corpus_records(config), config, fits)


def corpus_records(config: GenerateConfig) -> Iterator[Document | Rejected]:
    """The configured corpus's records as read (ids, duplicates and unreadable lines decided), before
    segmenting and the prepare rules: what an instruction set is read as, too (`run/inputs.py`)."""
    corpus = config.corpus
    return read_corpus(
        corpus.path,
        corpus.text_field,
        corpus.id_field,
        corpus.split,
        corpus.revision,
        corpus.limit,
        duplicate_ids=corpus.duplicate_ids,
        invalid_utf8=corpus.invalid_utf8,
        max_record_bytes=corpus.max_record_bytes,
        invalid_unicode=corpus.invalid_unicode,
        malformed_lines=corpus.malformed_lines,
    )
