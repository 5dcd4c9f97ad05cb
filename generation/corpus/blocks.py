"""The corpus cut into blocks, and the corpus-wide decisions made before any block runs.

`--executor ray` runs blocks of the corpus on separate actors, yet must decide exactly as one process
reading the whole corpus would (`bft generate` without `--executor ray`). Two rules of reading span
the corpus: a document id seen twice is an error or renamed (`corpus.duplicate_ids`), and a text
seen twice is `duplicate_text` (`prepare.dedup`). So a run goes in two passes:

1. `fingerprint`: each block reports its rows' ids and the hashes of their prepared texts;
   `plan_blocks` replays the two rules over them in corpus order, on the driver (an id and a 64-bit
   hash a record), and gives each block its global first position and the renames and duplicates
   that fall in it (`BlockWork`);
2. `block_items`: each block is read again on an actor and turned into the same documents and
   rejected records the local reader makes, ready for the stage engine.

A block is a run of `block_size` records of one file: its key (`f00003-b000012`) names the same
records on every rerun, which is what lets a rerun skip finished blocks. Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from bft.generation.config import GenerateConfig
from bft.generation.corpus.documents import DuplicateIds, location_id, row_id, row_item, unreadable_item
from bft.generation.corpus.prepare import Preparer
from bft.generation.corpus.rows import Unreadable, rows_of_file
from bft.generation.corpus.segments import SEGMENTS_PER_PAGE
from bft.generation.corpus.stream import document_stream, segmenter
from bft.generation.records import Document, Rejected
from bft.generation.text import stable_hash64


def block_key(file_index: int, number: int) -> str:
    return f"f{file_index:05d}-b{number:06d}"


@dataclass
class RawBlock:
    """Up to `block_size` consecutive records of one corpus file, as read (location, row)."""

    key: str
    file_index: int
    first_row: int  # index of its first record within the file
    rows: list[tuple[str, dict | Unreadable]]


def read_blocks(
    file: str, file_index: int, block_size: int, invalid_utf8: str, max_bytes: int, malformed_lines: str = "error"
) -> Iterator[RawBlock]:
    """One corpus file, cut into blocks of `block_size` records (the last one shorter)."""
    rows: list = []
    number = first = 0
    for item in rows_of_file(file, invalid_utf8, max_bytes, malformed_lines):
        rows.append(item)
        if len(rows) == block_size:
            yield RawBlock(block_key(file_index, number), file_index, first, rows)
            number, first, rows = number + 1, first + len(rows), []
    if rows:
        yield RawBlock(block_key(file_index, number), file_index, first, rows)


@dataclass
class BlockWork:
    """What a block needs to know about the rest of the corpus to decide as the local reader does."""

    key: str
    first_position: int  # corpus position of the block's first record
    rows: int  # records to process (fewer than the block holds when corpus.limit ends inside it)
    renames: dict[int, str] = field(default_factory=dict)  # position -> the id a duplicate id becomes
    duplicates: set[int] = field(default_factory=set)  # item positions whose prepared text came earlier


@dataclass
class Fingerprint:
    """What pass 1 learns of a block: each record's id (and whether bft derived it) and location, and
    the (item offset, text hash) of every item that survives cleaning."""

    key: str
    file_index: int
    first_row: int
    ids: list[tuple[str, bool]]
    locations: list[str]
    texts: list[list[tuple[int, int]]]


def fingerprint(block: RawBlock, config: GenerateConfig) -> Fingerprint:
    """Pass 1 for one block: ids, and the hashes of the texts the prepare rules would compare."""
    corpus = config.corpus
    cleaner = Preparer(config.prepare)
    segment = segmenter(config)
    ids, locations, texts = [], [], []
    for location, row in block.rows:
        locations.append(location)
        if isinstance(row, Unreadable):
            ids.append((location_id(location), True))
            texts.append([])
            continue
        doc_id, derived = row_id(row, location, corpus.text_field, corpus.id_field)
        ids.append((doc_id, derived))
        hashes = []
        if config.prepare.dedup:
            item = row_item(
                dict(row), location, 0, doc_id, [], corpus.text_field, corpus.invalid_unicode, corpus.id_field
            )  # position 0: offsets only
            for part in segment([item]):
                if isinstance(part, Document):
                    cleaned = cleaner.clean(part)
                    if isinstance(cleaned, Document):
                        hashes.append((cleaned.position, stable_hash64(cleaned.text)))
        texts.append(hashes)
    return Fingerprint(block.key, block.file_index, block.first_row, ids, locations, texts)


@dataclass
class Plan:
    """Pass 1's result: the work of every block within `corpus.limit`, in corpus order."""

    blocks: list[BlockWork]

    @property
    def records(self) -> int:
        return sum(block.rows for block in self.blocks)


def plan_blocks(fingerprints: list[Fingerprint], config: GenerateConfig) -> Plan:
    """Replay the corpus-wide rules over every block's fingerprint in corpus order.

    Raises `CorpusError` for a duplicate id under `duplicate_ids: error`, naming both records, as the
    local reader does.
    """
    limit = config.corpus.limit
    segmented = config.segment.mode == "headers"
    ids = DuplicateIds(config.corpus.duplicate_ids)
    seen_texts: set[int] = set()
    blocks: list[BlockWork] = []
    position = 0
    for block in sorted(fingerprints, key=lambda b: (b.file_index, b.first_row)):
        if limit is not None and position >= limit:
            break
        rows = len(block.ids) if limit is None else min(len(block.ids), limit - position)
        work = BlockWork(block.key, position, rows)
        for offset in range(rows):
            (doc_id, derived), here = block.ids[offset], position + offset
            kept_id, _ = ids.admit(doc_id, derived, block.locations[offset], here)
            if kept_id != doc_id:
                work.renames[here] = kept_id
            for item, text_hash in block.texts[offset]:
                if text_hash in seen_texts:
                    work.duplicates.add(here * SEGMENTS_PER_PAGE + item if segmented else here)
                else:
                    seen_texts.add(text_hash)
        blocks.append(work)
        position += rows
    return Plan(blocks)


def block_items(block: RawBlock, work: BlockWork, config: GenerateConfig, fits=None) -> Iterator[Document | Rejected]:
    """Pass 2 for one block: its documents and rejected records, as the local reader and prepare make them."""
    corpus = config.corpus

    def read() -> Iterator[Document | Rejected]:
        for offset, (location, row) in enumerate(block.rows[: work.rows]):
            position = work.first_position + offset
            if isinstance(row, Unreadable):
                yield unreadable_item(location, row, position, work.renames.get(position, location_id(location)))
                continue
            original, _ = row_id(row, location, corpus.text_field, corpus.id_field)
            renamed = work.renames.get(position)
            doc_id, flags = (renamed, [f"duplicate_id:{original}"]) if renamed else (original, [])
            yield row_item(
                row, location, position, doc_id, flags, corpus.text_field, corpus.invalid_unicode, corpus.id_field
            )

    return document_stream(read(), config, fits, work.duplicates)
