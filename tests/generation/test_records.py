"""Records and their parquet columns: one field list, so that no field is dropped when parquet is written."""

from dataclasses import fields

from bft.generation.records import PROVENANCE_TYPE, RECORD_SCHEMA, Provenance, StageRecord

NOT_WRITTEN = {"position"}  # the record's place in the corpus: it orders the output rows, it is not a column


def test_every_provenance_field_is_a_parquet_field_in_the_same_order():
    assert [column.name for column in PROVENANCE_TYPE] == [f.name for f in fields(Provenance)]


def test_every_record_field_is_a_parquet_column():
    assert set(RECORD_SCHEMA.names) == {f.name for f in fields(StageRecord)} - NOT_WRITTEN
