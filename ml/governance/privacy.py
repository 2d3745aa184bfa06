"""Differentially private aggregate exports: the Laplace mechanism over bounded user contributions,
with a persistent privacy budget ledger.

    dp_export(settings, epsilon=0.1)   revenue and buyers per category_l1 x region x week, with noise;
                                       spends the budget first; writes $PRIVACY_EXPORTS_DIR/<query>_<release>.csv
    BudgetLedger.from_settings(s)      epsilon spent / remaining per dataset; spend() refuses beyond the total
    bound_contributions(frame, bounds) each user in at most k cells, revenue per cell clipped to [0, cap]
    laplace_noise(scale, size, rng)    the noise itself

What is protected
-----------------
User-level differential privacy of the released figures: two input datasets are neighbours when one
holds all rows of one extra user (add/remove-one-user). Whatever one user bought, in however many
weeks and categories, the distribution of a release changes by at most a factor exp(epsilon). The
warehouse and its user-level export (dbt model ``mart_user_category_region_week``) are *not*
private; only what ``dp_export`` writes is.

Contribution bounding (sensitivity)
-----------------------------------
The input has one row per user x cell (cell = category_l1 x region x week) with the user's revenue
there. Before anything is summed, each user is bounded independently of every other user:

* **at most ``max_cells_per_user`` (k) cells**: a user's cells are ordered by a keyed hash of
  (user_id, cell) and the first k kept. The order is pseudo-random (so bounding does not favour big
  or small cells and does not bias the figures towards any category), deterministic for a given
  ``seed`` (a rerun on the same data bounds identically), and a function of that user's own rows
  only, which is what the sensitivity argument needs;
* **revenue per kept cell clipped to [0, ``revenue_cap``] (C)**; negative net revenue (discount
  larger than the price) counts 0;
* **buyers: 1 per user per kept cell.**

Adding or removing one user therefore changes at most k cells, each revenue sum by at most C and
each buyer count by at most 1. The L1 sensitivities are::

    revenue-sum query:   Delta_rev    = k * C
    buyers-count query:  Delta_buyers = k

Bounding trades bias (clipped revenue, dropped cells; the internal diagnostics count both) for less
noise: noise grows linearly in k and C.

The mechanism and the budget split
----------------------------------
Each figure of each cell gets independent Laplace noise of scale Delta / epsilon_figure, which makes
each figure vector epsilon_figure-DP (Dwork et al. 2006). The release's epsilon is split between the
two figures, ``epsilon_buyers = buyers_share * epsilon`` and ``epsilon_revenue = epsilon -
epsilon_buyers`` (default half each: the buyer count drives suppression and is the denominator of
revenue per buyer, so it deserves as much accuracy as revenue); by sequential composition the release
is epsilon-DP. The scale of each figure is written beside it (``revenue_noise_scale``,
``buyers_noise_scale``): a 95 % interval is about +/- 3 scales.

The cells noised are a fixed domain, not the cells that happen to hold data: every combination of
the categories, regions and weeks (the full weekly range, so empty weeks are noised too) of the
``domain`` argument, by default the distinct values present in the export. Those lists are treated as
public metadata (the catalogue's categories, the sales regions, the reporting period); pass
``domain=`` explicitly when they are not, since a category bought by a single user would otherwise
reveal itself by appearing in the domain.

Suppression
-----------
A cell is withheld when its *noisy* buyer count is below ``min_buyers``. Deciding on the noisy value
is post-processing of an epsilon-DP output, so it costs no budget and leaks nothing extra;
thresholding the *true* count would (the presence of a cell would reveal that at least
``min_buyers`` real users are in it). Released figures are then rounded (buyers to integers,
revenue to whole currency units, negative noisy revenue to 0), post-processing as well.

The budget ledger
-----------------
``BudgetLedger`` is a SQLite file (settings.privacy_ledger_path) with one row per release: dataset,
query, epsilon, UTC timestamp, parameters, output path. Under basic sequential composition the
privacy loss of a dataset is the sum of the epsilons of its releases; ``spend`` refuses
(``BudgetExceededError``) a release that would take that sum above the total
(settings.privacy_total_epsilon). The check and the insert run in one ``BEGIN IMMEDIATE``
transaction, so two processes cannot both spend the last of a budget. ``dp_export`` spends *before*
any noise is drawn or anything written; a failure after spending leaves the budget spent
(conservative: the noisy figures may have been seen).

Limits: numpy's floating-point Laplace sampler is not hardened against the least-significant-bit
attack (Mironov 2012); composition is basic (no advanced/RDP accounting); the ledger trusts whoever
can write its file.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from ml.settings import Settings

SOURCE_MART = "mart_user_category_region_week"
QUERY = "revenue_buyers_by_category_region_week"
QUERIES = (QUERY,)
CELL = ["category_l1", "region", "week"]
OUTPUT_COLUMNS = [*CELL, "revenue", "revenue_noise_scale", "buyers", "buyers_noise_scale", "epsilon"]
# Floating-point slack when comparing spent + requested to the total (0.1 ten times is 1.0).
_BUDGET_TOLERANCE = 1e-9


class PrivacyError(RuntimeError):
    """A differentially private export cannot run (missing input, bad parameters)."""


class BudgetExceededError(PrivacyError):
    """The ledger refused a release: it would take the dataset's epsilon above the total budget."""

    def __init__(self, dataset: str, spent: float, remaining: float, requested: float, total: float):
        super().__init__(
            f"privacy budget of {dataset!r} exhausted: spent {spent:.6g} of {total:.6g}, "
            f"remaining {remaining:.6g}, requested {requested:.6g}; release refused"
        )
        self.dataset, self.spent, self.remaining, self.requested, self.total = dataset, spent, remaining, requested, total


def check_epsilon(epsilon: float) -> float:
    """``epsilon`` as a float; ValueError unless finite and > 0."""
    try:
        value = float(epsilon)
    except (TypeError, ValueError):
        raise ValueError(f"epsilon must be a number, got {epsilon!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"epsilon must be finite and > 0, got {epsilon!r}")
    return value


# ----------------------------------------------------------------------------- the mechanism


def laplace_noise(scale: float, size, rng: np.random.Generator) -> np.ndarray:
    """``size`` draws of Laplace(0, ``scale``) from ``rng`` (density exp(-|x|/scale) / (2 scale))."""
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"Laplace scale must be finite and > 0, got {scale!r}")
    return rng.laplace(0.0, scale, size)


@dataclass(frozen=True)
class ContributionBounds:
    """How much one user may contribute: ``max_cells_per_user`` cells, ``revenue_cap`` revenue per cell.
    ``seed`` keys the pseudo-random choice of the kept cells."""

    max_cells_per_user: int = 5
    revenue_cap: float = 250.0
    seed: int = 0

    def __post_init__(self):
        if (
            isinstance(self.max_cells_per_user, bool)
            or int(self.max_cells_per_user) != self.max_cells_per_user
            or self.max_cells_per_user < 1
        ):
            raise ValueError(f"max_cells_per_user must be an integer >= 1, got {self.max_cells_per_user!r}")
        if not math.isfinite(float(self.revenue_cap)) or self.revenue_cap <= 0:
            raise ValueError(f"revenue_cap must be finite and > 0, got {self.revenue_cap!r}")

    @property
    def revenue_sensitivity(self) -> float:
        """L1 sensitivity of the per-cell revenue sums to one user: k cells x cap each."""
        return self.max_cells_per_user * float(self.revenue_cap)

    @property
    def buyers_sensitivity(self) -> float:
        """L1 sensitivity of the per-cell buyer counts to one user: 1 in each of k cells."""
        return float(self.max_cells_per_user)


def _hash_key(seed: int) -> str:
    """pandas' hash key (16 characters) for a seed."""
    return hashlib.blake2b(str(int(seed)).encode(), digest_size=8).hexdigest()


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """The user-level rows with typed cell columns; the all-null placeholder row of an empty dbt export dropped."""
    missing = [c for c in ["user_id", *CELL, "revenue"] if c not in frame.columns]
    if missing:
        raise PrivacyError(f"the user-level frame lacks columns {missing} (expected {SOURCE_MART})")
    out = frame.loc[frame["user_id"].notna(), ["user_id", *CELL, "revenue"]].copy()
    out["category_l1"] = out["category_l1"].fillna("unknown").astype(str)
    out["region"] = out["region"].fillna("unknown").astype(str)
    out["week"] = pd.to_datetime(out["week"]).astype("datetime64[ns]")
    out["revenue"] = pd.to_numeric(out["revenue"], errors="coerce").fillna(0.0).astype(float)
    return out.reset_index(drop=True)


def bound_contributions(frame: pd.DataFrame, bounds: ContributionBounds) -> pd.DataFrame:
    """One row per kept (user, cell): at most ``bounds.max_cells_per_user`` cells per user, chosen by a
    keyed hash of (user_id, cell), revenue clipped to [0, ``bounds.revenue_cap``]. Columns: user_id,
    category_l1, region, week, revenue."""
    rows = _normalise(frame)
    per_cell = rows.groupby(["user_id", *CELL], as_index=False, sort=False)["revenue"].sum()
    order = pd.util.hash_pandas_object(per_cell[["user_id", *CELL]].astype(str), index=False, hash_key=_hash_key(bounds.seed))
    per_cell = per_cell.assign(_order=order.to_numpy()).sort_values(["user_id", "_order"], kind="mergesort")
    kept = per_cell[per_cell.groupby("user_id", sort=False).cumcount() < bounds.max_cells_per_user]
    kept = kept.drop(columns="_order").assign(revenue=lambda f: f["revenue"].clip(lower=0.0, upper=float(bounds.revenue_cap)))
    return kept.sort_values(["user_id", *CELL]).reset_index(drop=True)


def cell_domain(frame: pd.DataFrame, domain: Mapping[str, Sequence] | None = None) -> pd.DataFrame:
    """Every category_l1 x region x week cell to release: the values in ``domain`` (keys category_l1,
    region, week), else those present in ``frame``; weeks span the full weekly range (empty weeks
    included)."""
    domain = dict(domain or {})
    unknown = set(domain) - set(CELL)
    if unknown:
        raise ValueError(f"domain keys must be among {CELL}, got {sorted(unknown)}")
    rows = _normalise(frame) if "user_id" in frame.columns else frame
    categories = sorted({str(v) for v in domain.get("category_l1", rows["category_l1"].unique())})
    regions = sorted({str(v) for v in domain.get("region", rows["region"].unique())})
    if "week" in domain:
        weeks = pd.DatetimeIndex(sorted(set(pd.to_datetime(list(domain["week"])))))
    elif len(rows):
        weeks = pd.date_range(rows["week"].min(), rows["week"].max(), freq="7D")
    else:
        weeks = pd.DatetimeIndex([])
    cells = pd.MultiIndex.from_product([categories, regions, weeks.astype("datetime64[ns]")], names=CELL).to_frame(index=False)
    return cells


def true_aggregates(bounded: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Exact revenue sum and buyer count of the bounded rows per domain cell (0 for empty cells)."""
    sums = bounded.groupby(CELL, as_index=False).agg(revenue=("revenue", "sum"), buyers=("user_id", "nunique"))
    out = cells.merge(sums, on=CELL, how="left")
    out["revenue"] = out["revenue"].fillna(0.0).astype(float)
    out["buyers"] = out["buyers"].fillna(0).astype(float)
    return out


@dataclass(frozen=True)
class NoisePlan:
    """How a release's epsilon splits between its two figures, and the resulting Laplace scales."""

    epsilon: float
    epsilon_revenue: float
    epsilon_buyers: float
    revenue_noise_scale: float
    buyers_noise_scale: float

    @classmethod
    def of(cls, bounds: ContributionBounds, epsilon: float, buyers_share: float = 0.5) -> "NoisePlan":
        epsilon = check_epsilon(epsilon)
        if not 0 < float(buyers_share) < 1:
            raise ValueError(f"buyers_share must lie strictly between 0 and 1, got {buyers_share!r}")
        eps_buyers = epsilon * float(buyers_share)
        eps_revenue = epsilon - eps_buyers
        return cls(
            epsilon=epsilon,
            epsilon_revenue=eps_revenue,
            epsilon_buyers=eps_buyers,
            revenue_noise_scale=bounds.revenue_sensitivity / eps_revenue,
            buyers_noise_scale=bounds.buyers_sensitivity / eps_buyers,
        )


def add_noise(aggregates: pd.DataFrame, plan: NoisePlan, rng: np.random.Generator) -> pd.DataFrame:
    """The Laplace mechanism: ``aggregates`` (cells with exact revenue, buyers) with noisy revenue and
    buyers (unrounded) and the scale of each figure's noise."""
    n = len(aggregates)
    return aggregates[CELL].assign(
        revenue=aggregates["revenue"].to_numpy(float) + laplace_noise(plan.revenue_noise_scale, n, rng),
        revenue_noise_scale=plan.revenue_noise_scale,
        buyers=aggregates["buyers"].to_numpy(float) + laplace_noise(plan.buyers_noise_scale, n, rng),
        buyers_noise_scale=plan.buyers_noise_scale,
        epsilon=plan.epsilon,
    )


def publishable(noisy: pd.DataFrame, min_buyers: float) -> tuple[pd.DataFrame, int]:
    """Post-processing of the noisy cells: drop those whose noisy buyer count is below ``min_buyers``,
    round buyers to integers and revenue to whole units (negative to 0). Returns (report, suppressed)."""
    if not math.isfinite(float(min_buyers)) or min_buyers < 0:
        raise ValueError(f"min_buyers must be finite and >= 0, got {min_buyers!r}")
    keep = noisy["buyers"].to_numpy(float) >= float(min_buyers)
    out = noisy.loc[keep].copy()
    out["buyers"] = np.round(out["buyers"].to_numpy(float)).clip(min=0).astype("int64")
    out["revenue"] = np.round(out["revenue"].to_numpy(float).clip(min=0.0))
    out["week"] = pd.to_datetime(out["week"]).dt.date
    return out[OUTPUT_COLUMNS].reset_index(drop=True), int((~keep).sum())


# ----------------------------------------------------------------------------- the budget ledger


@dataclass(frozen=True)
class Release:
    """One recorded release and the dataset's budget after it."""

    release_id: int
    dataset: str
    query: str
    epsilon: float
    released_at: str
    spent: float
    remaining: float


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot run as spreadsheet formulas: a cell starting with = + - @ or a
    tab / carriage return gets a leading apostrophe (OWASP's CSV injection advice). Numbers stay."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            text = out[col].astype("string")
            risky = text.str.startswith(_FORMULA_START).fillna(False)
            out[col] = text.mask(risky, "'" + text)
    return out


class BudgetLedger:
    """Epsilon spent per dataset, persisted in SQLite; refuses releases beyond ``total_epsilon``."""

    def __init__(self, path: Path | str, total_epsilon: float, timeout_s: float = 60.0):
        self.path = Path(path)
        self.total_epsilon = check_epsilon(total_epsilon)
        self.timeout_s = timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as con:
            con.execute(
                """create table if not exists releases (
                    release_id integer primary key autoincrement,
                    dataset text not null,
                    query text not null,
                    epsilon real not null check (epsilon > 0),
                    released_at text not null,
                    details text,
                    output_path text
                )"""
            )
            # the total is the ledger's, fixed when it was created: a process cannot raise it by its own setting
            con.execute("create table if not exists budget (id integer primary key check (id = 1), total_epsilon real not null)")
            con.execute("insert or ignore into budget values (1, ?)", (self.total_epsilon,))
            (recorded,) = con.execute("select total_epsilon from budget where id = 1").fetchone()
        if self.total_epsilon > recorded * (1 + _BUDGET_TOLERANCE):
            raise ValueError(
                f"the privacy ledger {self.path} was created with a total epsilon of {recorded:g} per dataset; "
                f"PRIVACY_TOTAL_EPSILON={self.total_epsilon:g} would raise it. A ledger's total is fixed: keep the "
                f"setting at {recorded:g} (or lower), or start a new ledger (PRIVACY_LEDGER_PATH) for a new budget"
            )
        self.total_epsilon = min(self.total_epsilon, recorded)  # a lower setting is stricter: it applies

    @classmethod
    def from_settings(cls, settings: Settings) -> "BudgetLedger":
        return cls(settings.privacy_ledger_path, settings.privacy_total_epsilon)

    # One connection per operation: processes never share one, and the file is closed in between.
    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: IMMEDIATE takes the write lock before any read, so a concurrent
        spender waits (up to ``timeout_s``) instead of reading the same balance."""
        con = self._connect()
        try:
            con.execute("begin immediate")
            try:
                yield con
            except BaseException:
                con.execute("rollback")
                raise
            con.execute("commit")
        finally:
            con.close()

    @staticmethod
    def _spent(con: sqlite3.Connection, dataset: str) -> float:
        return math.fsum(row[0] for row in con.execute("select epsilon from releases where dataset = ?", (dataset,)))

    def spent(self, dataset: str) -> float:
        con = self._connect()
        try:
            return self._spent(con, dataset)
        finally:
            con.close()

    def remaining(self, dataset: str) -> float:
        return max(self.total_epsilon - self.spent(dataset), 0.0)

    def spend(self, dataset: str, query: str, epsilon: float, details: Mapping | None = None) -> Release:
        """Record a release of ``epsilon`` on ``dataset``, or raise BudgetExceededError (nothing recorded)
        when it would take the dataset's total above ``total_epsilon``. Atomic across processes."""
        epsilon = check_epsilon(epsilon)
        with self._transaction() as con:
            spent = self._spent(con, dataset)
            if spent + epsilon > self.total_epsilon * (1 + _BUDGET_TOLERANCE):
                raise BudgetExceededError(dataset, spent, max(self.total_epsilon - spent, 0.0), epsilon, self.total_epsilon)
            released_at = datetime.now(timezone.utc).isoformat()
            cur = con.execute(
                "insert into releases (dataset, query, epsilon, released_at, details) values (?, ?, ?, ?, ?)",
                (dataset, query, epsilon, released_at, json.dumps(dict(details or {}), default=str, sort_keys=True)),
            )
            release_id = int(cur.lastrowid)
        spent += epsilon
        return Release(release_id, dataset, query, epsilon, released_at, spent, max(self.total_epsilon - spent, 0.0))

    def record_output(self, release_id: int, path: Path | str) -> None:
        """Attach the written report to its release."""
        with self._transaction() as con:
            con.execute("update releases set output_path = ? where release_id = ?", (str(path), int(release_id)))

    def releases(self, dataset: str | None = None) -> list[dict]:
        """Every recorded release (oldest first), optionally of one dataset."""
        con = self._connect()
        con.row_factory = sqlite3.Row
        try:
            sql = "select * from releases" + (" where dataset = ?" if dataset else "") + " order by release_id"
            rows = [dict(r) for r in con.execute(sql, (dataset,) if dataset else ())]
        finally:
            con.close()
        for row in rows:
            row["details"] = json.loads(row["details"]) if row["details"] else {}
        return rows

    def summary(self) -> list[dict]:
        """Per dataset: releases, epsilon spent and remaining against the total."""
        by_dataset: dict[str, list[float]] = {}
        for row in self.releases():
            by_dataset.setdefault(row["dataset"], []).append(row["epsilon"])
        return [
            {
                "dataset": dataset,
                "releases": len(eps),
                "spent": math.fsum(eps),
                "remaining": max(self.total_epsilon - math.fsum(eps), 0.0),
                "total": self.total_epsilon,
            }
            for dataset, eps in sorted(by_dataset.items())
        ]


# ----------------------------------------------------------------------------- the export


def source_path(settings: Settings) -> Path:
    """The user-level dbt export the DP reports read: $EXPORTS_DIR/mart_user_category_region_week.parquet."""
    return Path(settings.exports_dir) / f"{SOURCE_MART}.parquet"


def load_user_cells(settings: Settings) -> pd.DataFrame:
    path = source_path(settings)
    if not path.exists():
        raise PrivacyError(
            f"{path} is missing: build the warehouse first (dbt model {SOURCE_MART}: "
            f"`ecomml warehouse build --select {SOURCE_MART}+` or a full `ecomml warehouse build`)"
        )
    return pd.read_parquet(path, columns=["user_id", *CELL, "revenue"])


def dp_export(
    settings: Settings,
    query: str = QUERY,
    epsilon: float = 0.1,
    *,
    min_buyers: float = 10,
    max_cells_per_user: int = 5,
    revenue_cap: float = 250.0,
    buyers_share: float = 0.5,
    domain: Mapping[str, Sequence] | None = None,
    seed: int | None = None,
    bounding_seed: int = 0,
    fmt: Literal["csv", "parquet"] = "csv",
    ledger: BudgetLedger | None = None,
) -> dict:
    """Release revenue and buyers per category_l1 x region x week with epsilon-DP (user level).

    Reads the dbt export, bounds each user's contribution, computes exact cell sums, spends ``epsilon``
    in the ledger (BudgetExceededError: nothing is released), adds Laplace noise, suppresses cells
    whose noisy buyer count is below ``min_buyers``, rounds, and writes the report (no user_id) to
    settings.privacy_exports_dir/<query>_<release_id>.<fmt>. ``seed`` fixes the noise (tests only: a
    published seed lets anyone subtract the noise); by default it comes from the OS.
    Returns a summary; its ``internal`` part is computed from exact data and is NOT private.
    """
    start = time.perf_counter()
    if query not in QUERIES:
        raise ValueError(f"unknown query {query!r}; available: {list(QUERIES)}")
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be csv or parquet, got {fmt!r}")
    bounds = ContributionBounds(max_cells_per_user=max_cells_per_user, revenue_cap=revenue_cap, seed=bounding_seed)
    plan = NoisePlan.of(bounds, epsilon, buyers_share)
    if not math.isfinite(float(min_buyers)) or min_buyers < 0:
        raise ValueError(f"min_buyers must be finite and >= 0, got {min_buyers!r}")

    rows = _normalise(load_user_cells(settings))
    cells = cell_domain(rows, domain)
    in_domain = rows.merge(cells, on=CELL, how="inner")
    bounded = bound_contributions(in_domain, bounds)
    exact = true_aggregates(bounded, cells)

    ledger = ledger or BudgetLedger.from_settings(settings)
    release = ledger.spend(
        SOURCE_MART,
        query,
        plan.epsilon,
        details={
            "epsilon_revenue": plan.epsilon_revenue,
            "epsilon_buyers": plan.epsilon_buyers,
            "max_cells_per_user": bounds.max_cells_per_user,
            "revenue_cap": bounds.revenue_cap,
            "min_buyers": min_buyers,
            "cells": len(cells),
        },
    )
    rng = np.random.default_rng(seed)
    report, suppressed = publishable(add_noise(exact, plan, rng), min_buyers)

    out_dir = Path(settings.privacy_exports_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{query}_{release.release_id:05d}.{fmt}"
    if fmt == "csv":
        csv_safe(report).to_csv(path, index=False)
    else:
        report.to_parquet(path, index=False)
    ledger.record_output(release.release_id, path)

    user_cells = in_domain.groupby("user_id").size()
    warnings = []
    if plan.buyers_noise_scale > max(float(min_buyers), 1.0):
        warnings.append(
            f"buyers noise scale {plan.buyers_noise_scale:.4g} exceeds min_buyers {min_buyers}: released cells are "
            "mostly noise; raise epsilon, lower max_cells_per_user, or aggregate coarser"
        )
    return {
        "query": query,
        "dataset": SOURCE_MART,
        "release_id": release.release_id,
        "path": str(path),
        "epsilon": plan.epsilon,
        "epsilon_revenue": plan.epsilon_revenue,
        "epsilon_buyers": plan.epsilon_buyers,
        "revenue_sensitivity": bounds.revenue_sensitivity,
        "buyers_sensitivity": bounds.buyers_sensitivity,
        "revenue_noise_scale": plan.revenue_noise_scale,
        "buyers_noise_scale": plan.buyers_noise_scale,
        "min_buyers": min_buyers,
        "cells": len(cells),
        "cells_released": len(report),
        "cells_suppressed": suppressed,
        "epsilon_spent": release.spent,
        "epsilon_remaining": release.remaining,
        "total_epsilon": ledger.total_epsilon,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - start, 3),
        # From exact data, for choosing k and the cap: NOT differentially private, do not publish.
        "internal": {
            "users": int(rows["user_id"].nunique()),
            "rows": len(rows),
            "rows_outside_domain": len(rows) - len(in_domain),
            "users_over_cell_limit": int((user_cells > bounds.max_cells_per_user).sum()),
            "cells_dropped_by_bounding": len(in_domain.drop_duplicates(["user_id", *CELL])) - len(bounded),
            "revenue_before_bounding": float(in_domain["revenue"].sum()),
            "revenue_after_bounding": float(bounded["revenue"].sum()),
        },
    }
