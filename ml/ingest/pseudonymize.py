"""Keyed pseudonyms for customer identifiers, and the lake's record of which id space it holds.

    pz = pseudonymizer_for(key)            # None when no key: nothing is pseudonymised
    pz.pseudonymize(series, "user_id")     # '13085' -> 'u_' + first 32 hex of HMAC-SHA256(key, '13085')
    check_id_space(lake_dir, pz)           # refuses to mix raw ids, or pseudonyms of another key
    record_id_space(lake_dir, pz, writer)  # <lake_dir>/_pseudonymization.json: the key's fingerprint

A pseudonym is ``<prefix><first 32 hex digits of HMAC-SHA256(key, id)>``: the same id gives the same
pseudonym in every table, file and run under one key, and nobody without the key can compute one
(or test a guessed id against one). 32 hex digits are 128 bits: the chance that any two of n distinct
ids collide is about n**2 / 2**129 (1e-21 for a billion ids). The id is hashed *after* the ingest's
normalisation (``transform.to_id``: stripped, ``13085.0`` -> ``13085``, empty -> null), so one
customer written two ways still gets one pseudonym; null stays null.

Which columns: ``user_id`` (prefix ``u_``) and a session id read from the source (prefix ``s_``: a
session token is an online identifier the source system links to its customer, and under
``user_from_session`` it *is* the user id). Sessions the ingest derives (``<user_id>-<first event time>``,
``<user_id>-<YYYYMMDD>``) are built from the pseudonym. docs/security.md says what stays readable.

The key never leaves this module's objects: not in reprs, errors, reports or files. The lake records
only ``key_fingerprint`` (first 8 hex digits of HMAC-SHA256(key, 'fingerprint')), enough to tell two
keys apart and useless for computing pseudonyms.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pydantic import SecretStr

from ml.contract import EMPTY_FILE, table_dir
from ml.ingest.mapping import IngestError
from ml.settings import PSEUDONYMIZE_KEY_MIN_CHARS

PREFIXES = {"user_id": "u_", "session_id": "s_"}  # the identifier fields pseudonymised, and their prefixes
DIGEST_HEX = 32  # hex digits kept of the 64 of HMAC-SHA256: 128 bits
FINGERPRINT_HEX = 8
MARKER = "_pseudonymization.json"  # in LAKE_DIR, beside _lake.json and _ingest_log.jsonl
USER_TABLES = ("users", "events", "orders")  # the lake tables that hold user ids


class IdSpaceError(IngestError):
    """Writing would mix raw user ids and pseudonyms, or pseudonyms of two keys, in one lake."""


class _FromSettings:
    def __repr__(self) -> str:
        return "FROM_SETTINGS"


FROM_SETTINGS = _FromSettings()  # default of ``pseudonymize_key``: PSEUDONYMIZE_KEY via ml.settings.get_secrets()


class Pseudonymizer:
    """HMAC-SHA256 pseudonyms under one key. The key is held as bytes and never shown."""

    __slots__ = ("_key", "fingerprint")

    def __init__(self, key: "str | SecretStr"):
        text = key.get_secret_value() if isinstance(key, SecretStr) else key
        if not isinstance(text, str) or len(text) < PSEUDONYMIZE_KEY_MIN_CHARS:
            length = len(text) if isinstance(text, str) else type(text).__name__
            raise ValueError(f"pseudonymisation key too short or not text ({length}; at least {PSEUDONYMIZE_KEY_MIN_CHARS} characters)")
        self._key = text.encode("utf-8")
        self.fingerprint = hmac.new(self._key, b"fingerprint", hashlib.sha256).hexdigest()[:FINGERPRINT_HEX]

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_fingerprint={self.fingerprint!r})"

    def __reduce__(self):  # a pickled Pseudonymizer would carry the key to disk
        raise TypeError("a Pseudonymizer holds a secret key and cannot be pickled")

    def pseudonym(self, value: str, field: str = "user_id") -> str:
        """The pseudonym of one already-normalised id."""
        digest = hmac.digest(self._key, value.encode("utf-8"), "sha256").hex()
        return PREFIXES[field] + digest[:DIGEST_HEX]

    def values(self, values: Iterable[str], field: str = "user_id") -> list[str]:
        return [self.pseudonym(v, field) for v in values]

    def pseudonymize(self, ids: pd.Series, field: str = "user_id") -> pd.Series:
        """Pseudonyms of normalised ids (``transform.to_id`` output): a string Series, nulls kept.
        Each distinct id is hashed once."""
        codes, uniques = pd.factorize(ids, use_na_sentinel=True)
        hashed = np.array(self.values((str(u) for u in uniques), field) + [None], dtype=object)
        return pd.Series(hashed[codes], index=ids.index, dtype="string")  # code -1 (null) -> the trailing None


def pseudonymizer_for(
    key: "str | SecretStr | Pseudonymizer | None | _FromSettings" = FROM_SETTINGS,
) -> Pseudonymizer | None:
    """A Pseudonymizer for ``key``; None when there is no key. ``FROM_SETTINGS`` reads PSEUDONYMIZE_KEY."""
    if key is FROM_SETTINGS:
        from ml.settings import get_secrets

        key = get_secrets().pseudonymize_key
    if key is None or isinstance(key, Pseudonymizer):
        return key
    return Pseudonymizer(key)


# ------------------------------------------------------------------------------------ the id space
def read_marker(lake_dir: Path) -> dict | None:
    path = Path(lake_dir) / MARKER
    return json.loads(path.read_text()) if path.exists() else None


def holds_user_rows(lake_dir: Path, replacing: Callable[[Path], bool] | None = None) -> bool:
    """Does the lake hold rows with user ids, not counting files ``replacing`` says are being rewritten?"""
    for name in USER_TABLES:
        root = table_dir(lake_dir, name)
        if not root.exists():
            continue
        for path in root.glob("**/*.parquet"):
            if path.name == EMPTY_FILE or (replacing is not None and replacing(path)):
                continue
            if pq.ParquetFile(path).metadata.num_rows > 0:
                return True
    return False


def check_id_space(lake_dir: Path, pz: Pseudonymizer | None, *, replacing: Callable[[Path], bool] | None = None) -> None:
    """Raise IdSpaceError when writing user ids under ``pz`` (None: raw ids) would mix id spaces
    with the user rows the lake keeps (files that ``replacing`` matches are about to be rewritten).

    The lake's id space is in ``_pseudonymization.json`` (absent: raw ids). Nothing is written here.
    """
    lake_dir = Path(lake_dir)
    marker = read_marker(lake_dir)
    if not holds_user_rows(lake_dir, replacing):
        return  # nothing to mix with: this write decides the id space
    fresh = "write into a fresh LAKE_DIR (re-ingest every file from its raw export); see docs/security.md"
    if marker is None and pz is not None:
        raise IdSpaceError(
            f"lake {lake_dir} holds raw user ids (written without PSEUDONYMIZE_KEY); writing pseudonymised ids "
            f"into it would mix raw and pseudonymised ids. To pseudonymise, {fresh}"
        )
    if marker is not None and pz is None:
        raise IdSpaceError(
            f"lake {lake_dir} holds pseudonymised user ids (key fingerprint {marker.get('key_fingerprint')}) but "
            f"PSEUDONYMIZE_KEY is not set: raw ids would be mixed with pseudonyms. Set the key this lake was "
            f"written with, or {fresh}"
        )
    if marker is not None and marker.get("key_fingerprint") != pz.fingerprint:
        raise IdSpaceError(
            f"lake {lake_dir} holds user ids pseudonymised with another key (fingerprint "
            f"{marker.get('key_fingerprint')}; PSEUDONYMIZE_KEY has fingerprint {pz.fingerprint}): the same customer "
            f"would get two ids. Set the key this lake was written with, or (a new key is a new id space) {fresh}"
        )


def record_id_space(lake_dir: Path, pz: Pseudonymizer | None, writer: str) -> None:
    """Record the id space of the user rows about to be written (call after ``check_id_space``):
    ``_pseudonymization.json`` with the key's fingerprint, or no file for raw ids. A raw lake written
    without a key is left exactly as before."""
    lake_dir = Path(lake_dir)
    path = lake_dir / MARKER
    marker = read_marker(lake_dir)
    if pz is None:
        if marker is not None:  # check_id_space passed: no pseudonymised rows remain
            path.unlink()
        return
    if marker is not None and marker.get("key_fingerprint") == pz.fingerprint:
        return
    lake_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "user_ids": "pseudonymized",
                "method": f"prefix + first {DIGEST_HEX} hex digits of HMAC-SHA256(key, normalised id)",
                "prefixes": PREFIXES,
                "key_fingerprint": pz.fingerprint,
                "fingerprint": f"first {FINGERPRINT_HEX} hex digits of HMAC-SHA256(key, 'fingerprint')",
                "recorded_by": writer,
                "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
            indent=2,
        )
        + "\n"
    )
