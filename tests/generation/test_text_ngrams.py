"""Word n-grams, the unit of the copy and grounding measures: each run of n consecutive words, in order."""

from bft.generation.text import copy_overlap, grounding, ngrams, words


def test_ngrams_are_every_run_of_n_consecutive_words_in_order():
    tokens = ["a", "b", "c", "d"]
    assert ngrams(tokens, 1) == [("a",), ("b",), ("c",), ("d",)]
    assert ngrams(tokens, 3) == [("a", "b", "c"), ("b", "c", "d")]
    assert ngrams(tokens, 4) == [("a", "b", "c", "d")]


def test_fewer_words_than_n_make_no_ngram():
    assert ngrams(["a", "b"], 3) == []
    assert ngrams([], 1) == []


def test_the_measures_count_shared_ngrams():
    document = "Knead the dough for ten minutes, then let it rest in a warm place for an hour."
    copied = "Knead the dough for ten minutes, then bake"  # 8 words: 3 of its 4 five-grams are the document's
    assert copy_overlap(copied, document) == 0.75
    response = "Let it rest in a cold place"  # 7 words: 3 of its 5 three-grams are in the document
    assert grounding(response, document) == 0.6
    assert len(ngrams(words(document), 5)) == len(words(document)) - 4
