"""``generate()``: build the world, simulate shoppers in user batches, run stock, write the lake."""

from __future__ import annotations

import json
import resource
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml.contract import TS, finalize_lake
from ml.generate import catalog
from ml.generate.behaviour import DAY, EVENT_NAMES, PURCHASE, World, simulate
from ml.generate.inventory import simulate_stock
from ml.generate.params import END_DATE, SCALES, WAREHOUSES, Behaviour
from ml.ingest.pseudonymize import FROM_SETTINGS, check_id_space, pseudonymizer_for, record_id_space

GEN_DIR = "_generator"
EVENTS_PER_SESSION = 5.45  # measured mean events per regular session; sets the session rate from target_events

# random streams, one per component, so changing one part does not reshuffle the others
_STREAMS = {"categories": 1, "items": 2, "users": 3, "weather": 4, "promotions": 5, "inventory": 6, "orders": 7, "batch": 100}


def _rng(seed: int, stream: str, *more: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream], *more])


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    s = pc.utf8_lpad(pc.cast(pa.array(numbers, type=pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, s, "")


def _dates(epoch_day0: int, day: np.ndarray) -> pa.Array:
    return pa.array((epoch_day0 + day).astype(np.int32)).cast(pa.date32())


def _refuse_ingested(lake_dir: Path) -> None:
    """A lake holding ingested exports is a real shop's: synthetic rows must not join it silently."""
    from ml.lake import read_commits

    ingested = [c for c in read_commits(lake_dir) if c.get("kind") == "ingest"]
    if ingested:
        raise ValueError(
            f"the lake {lake_dir} holds {len(ingested)} ingested export(s) (e.g. {ingested[-1].get('source')}); "
            f"generating would add synthetic rows beside them. Generate into another DATA_DIR or LAKE_DIR"
        )


def _bar(it, progress: bool, **kw):
    if not progress:
        return it
    from tqdm import tqdm

    return tqdm(it, **kw)


def generate(
    scale: str = "tiny",
    seed: int = 42,
    lake_dir: Path | None = None,
    progress: bool = False,
    behaviour: Behaviour | None = None,
    replicate: int = 0,
    pseudonymize_key=FROM_SETTINGS,
) -> dict:
    """Write a synthetic shop into ``lake_dir`` (every contract table) and return a summary.

    Same ``scale`` and ``seed`` give identical tables. The generating parameters and the latent
    per-user / per-item truths are saved under ``lake_dir/_generator/``. ``behaviour`` replaces the
    default shopper parameters (counterfactual worlds, e.g. promotions without effect); ``replicate``
    > 0 redraws only the shoppers' randomness, keeping the world (catalogue, users, calendar, weather).

    With a pseudonymisation key (``pseudonymize_key``, default PSEUDONYMIZE_KEY) every ``user_id`` —
    in users, events, orders and ``_generator/users_latent.parquet`` — is its keyed pseudonym, exactly
    as ingestion writes them, so a generated demo lake and ingested exports share one id space; the
    ids themselves are synthetic either way. Raises IdSpaceError when the lake keeps (non-generated)
    user rows of another id space.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    if lake_dir is None:
        from ml.settings import get_settings

        lake_dir = get_settings().lake_dir
    lake_dir = Path(lake_dir)
    lake_dir.mkdir(parents=True, exist_ok=True)
    pz = pseudonymizer_for(pseudonymize_key)
    check_id_space(lake_dir, pz, replacing=lambda p: p.name.startswith("gen"))  # _clean removes gen*.parquet
    t0 = time.perf_counter()
    sc, beh = SCALES[scale], behaviour or Behaviour()
    start, D = sc.start_date, sc.days
    epoch_day0 = (pd.Timestamp(start) - pd.Timestamp("1970-01-01")).days
    start_us = epoch_day0 * 86_400_000_000
    _refuse_ingested(lake_dir)
    shutil.rmtree(lake_dir / GEN_DIR, ignore_errors=True)
    record_id_space(lake_dir, pz, writer=f"generate {scale} seed={seed}")

    # ---------------------------------------------------------------- the static world
    cats = catalog.build_categories(_rng(seed, "categories"))
    items = catalog.build_items(_rng(seed, "items"), sc, cats, start)
    users = catalog.build_users(_rng(seed, "users"), sc, beh, start)
    hol = catalog.build_holidays(start, END_DATE)
    weather, temp_anom, precip = catalog.build_weather(_rng(seed, "weather"), start, D)
    traffic = catalog.build_traffic(beh, start, D, hol)
    promos, promo_grid = catalog.build_promotions(_rng(seed, "promotions"), beh, items, D)
    n_items, n_wh = len(items), len(WAREHOUSES)

    cf = cats.frame
    l3 = items["l3_code"].to_numpy()
    pop = items["popularity"].to_numpy()
    pop_in_l3 = pop / pd.Series(pop).groupby(l3).transform("sum").to_numpy()
    within_cum = pd.Series(pop_in_l3).groupby(l3).cumsum().to_numpy()
    within_cum[np.r_[np.flatnonzero(np.diff(l3)), n_items - 1]] = 1.0
    first_of_l3 = np.r_[0, np.flatnonzero(np.diff(l3)) + 1]
    extra = np.array([beh.quantity_extra_mean.get(c, beh.quantity_extra_mean["default"]) for c in catalog.L1])
    rebuy_p = np.array([beh.replenish_prob.get(c, beh.replenish_prob["default"]) for c in catalog.L1])
    cycle = np.array([beh.replenish_cycle_days.get(c, beh.replenish_cycle_days["default"]) for c in catalog.L1])
    traffic_cum = np.c_[np.zeros(n_wh), np.cumsum(traffic, axis=1)]
    reg = users["region"].astype(int)
    first_day = np.clip(users["signup_day"], 0, D)
    avail = traffic_cum[reg, D] - traffic_cum[reg, first_day]
    rate = sc.target_events / (EVENTS_PER_SESSION * float((users["activity"] * avail).sum()))
    world = World(
        beh=beh,
        days=D,
        rate=rate,
        traffic_cum=traffic_cum,
        utc_offset=np.array([w[3] for w in WAREHOUSES], dtype=float),
        temp_anom=temp_anom,
        rainy=(precip > beh.rain_threshold_mm).astype(float),
        l3_l1=cf["l1_code"].to_numpy(),
        l3_logpop=np.log(cf["popularity"].to_numpy()),
        l3_temp=cf["temp_coef"].to_numpy(),
        l3_rain=cf["rain_coef"].to_numpy(),
        l3_anchor=first_of_l3,
        q_per_l3=len(cats.queries[0]),
        item_key=l3 + within_cum,
        item_l3=l3,
        item_l1=items["l1_code"].to_numpy(),
        item_slot=items["brand_slot"].to_numpy(),
        item_rel_lp=items["rel_log_price"].to_numpy(),
        item_launch=items["launch_day"].to_numpy(),
        item_qty_extra=extra[items["l1_code"].to_numpy()],
        item_replenish_p=rebuy_p[items["l1_code"].to_numpy()],
        item_cycle_days=cycle[items["l1_code"].to_numpy()],
        promo=promo_grid,
    )

    # ---------------------------------------------------------------- shoppers, batch by batch
    per_user = {k: v for k, v in users.items() if k not in ("gender", "birth_year")}
    ev_parts, line_parts = [], []
    session_base = line_base = 0
    batches = range(0, sc.n_users, sc.user_batch)
    for b, lo in enumerate(_bar(batches, progress, desc=f"simulate {scale}", unit="batch")):
        hi = min(lo + sc.user_batch, sc.n_users)
        out = simulate(world, {k: v[lo:hi] for k, v in per_user.items()}, _rng(seed, "batch", b, *((replicate,) if replicate else ())))
        ev, ln = out["events"], out["lines"]
        ev["user"] += lo
        ev["session"] += session_base
        ln["user"] = ln["user"] + lo
        ln["session"] = ln["session"] + session_base
        ln["requires"] = np.where(ln["requires"] >= 0, ln["requires"] + line_base, -1)
        session_base += out["n_sessions"]
        line_base += len(ln["t"])
        ev_parts.append(ev)
        line_parts.append(ln)
    ev = {k: np.concatenate([p[k] for p in ev_parts]) for k in ev_parts[0]}
    ln = {k: np.concatenate([p[k] for p in line_parts]) for k in line_parts[0]}
    del ev_parts, line_parts

    # ---------------------------------------------------------------- stock: block sales of stocked-out cells
    ln_day = (ln["t"] // DAY).astype(np.int64)
    ln_wh = users["region"][ln["user"]].astype(np.int64)
    cell = ln["item"].astype(np.int64) * n_wh + ln_wh
    cell_launch = np.repeat(items["launch_day"].to_numpy(), n_wh)
    stock = simulate_stock(
        _rng(seed, "inventory"),
        beh,
        cell,
        ln_day,
        ln["t"],
        ln["qty"],
        n_items * n_wh,
        cell_launch,
        D,
        progress,
        requires=ln.pop("requires"),
    )
    keep = stock.accepted
    blocked_lines = int((~keep & ~stock.excluded).sum())
    skipped_reorders = int(stock.excluded.sum())
    ln = {k: v[keep] for k, v in ln.items()}
    ln_day, ln_wh = ln_day[keep], ln_wh[keep]

    # ---------------------------------------------------------------- orders and lines
    o = np.lexsort((ln["item"], ln["session"]))
    ln = {k: v[o] for k, v in ln.items()}
    ln_day, ln_wh = ln_day[o], ln_wh[o]
    new_order = np.r_[True, ln["session"][1:] != ln["session"][:-1]]
    order_start = np.flatnonzero(new_order)
    line_number = (np.arange(len(o)) - np.repeat(order_start, np.diff(np.r_[order_start, len(o)]))) + 1
    ln_disc = promo_grid[ln_day, ln_wh, ln["item"]].astype(float) / 100.0
    price = items["price"].to_numpy()
    unit_price = price[ln["item"]]
    orng = _rng(seed, "orders")
    n_orders = len(order_start)
    order_of_line = np.cumsum(new_order) - 1
    cancelled = orng.random(n_orders) < beh.cancel_prob
    ret_p = np.array([beh.return_prob.get(c, beh.return_prob["default"]) for c in catalog.L1])[items["l1_code"].to_numpy()[ln["item"]]]
    returned_line = orng.random(len(o)) < ret_p
    ret_qty = np.where(returned_line, orng.integers(1, ln["qty"] + 1), 0)
    ret_qty = np.where(cancelled[order_of_line], ln["qty"], ret_qty).astype(np.int32)
    any_ret = np.bincount(order_of_line, weights=returned_line, minlength=n_orders) > 0
    status = np.where(cancelled, "cancelled", np.where(any_ret, "returned", "completed"))

    # ---------------------------------------------------------------- purchase events, all events in time order
    NP = len(ln["item"])
    for k, v in {
        "user": ln["user"].astype(np.int32),
        "session": ln["session"],
        "etype": np.full(NP, PURCHASE, np.int8),
        "t": ln["t"],
        "item": ln["item"].astype(np.int32),
        "query": np.full(NP, -1, np.int32),
        "dwell": np.full(NP, np.nan, np.float32),
    }.items():
        ev[k] = np.concatenate([ev[k], v])
    order = np.lexsort((ev["etype"], ev["session"], ev["t"]))
    ev = {k: v[order] for k, v in ev.items()}
    del order
    ev_day = (ev["t"] // DAY).astype(np.int64)
    n_events = len(ev_day)

    # ---------------------------------------------------------------- write
    user_ids = _ids("u", np.arange(sc.n_users), 7)
    if pz is not None:
        user_ids = pa.array(pz.values(user_ids.to_pylist()), type=pa.string())
    item_ids = pa.array(items["item_id"])
    wh_ids = pa.array([w[0] for w in WAREHOUSES])
    region_names = np.array([w[1] for w in WAREHOUSES])
    country_names = np.array([w[2] for w in WAREHOUSES])
    queries = pa.array([q for qs in cats.queries for q in qs])
    etypes = pa.array(list(EVENT_NAMES))

    def ts(t):
        return pa.array(start_us + np.round(t * 1e6).astype(np.int64), type=TS)

    def events_table(a, b):
        it, d = ev["item"][a:b], ev_day[a:b]
        has_item = it >= 0
        wh = users["region"][ev["user"][a:b]].astype(np.int64)
        itc = np.where(has_item, it, 0)
        shown = np.round(price[itc] * (1 - promo_grid[d, wh, itc] / 100.0), 2)
        is_p = ev["etype"][a:b] == PURCHASE
        q = ev["query"][a:b]
        dw = ev["dwell"][a:b].astype(np.float64)
        return pa.table(
            {
                "event_id": _ids("e", np.arange(a, b), 10),
                "user_id": user_ids.take(pa.array(ev["user"][a:b])),
                "session_id": _ids("s", ev["session"][a:b], 10),
                "event_type": etypes.take(pa.array(ev["etype"][a:b])),
                "event_timestamp": ts(ev["t"][a:b]),
                "event_date": _dates(epoch_day0, d),
                "item_id": item_ids.take(pa.array(itc, mask=~has_item)),
                "search_query": queries.take(pa.array(np.maximum(q, 0), mask=q < 0)),
                "dwell_seconds": pa.array(np.round(dw, 1), mask=np.isnan(dw)),
                "price": pa.array(shown, mask=~has_item),
                "order_id": pc.if_else(pa.array(is_p), _ids("o", ev["session"][a:b], 10), pa.scalar(None, pa.string())),
            }
        )

    # order-level arrays (one order per checkout session; every line of an order shares its time)
    ords = {
        "session": ln["session"][order_start],
        "user": ln["user"][order_start],
        "t": ln["t"][order_start],
        "day": ln_day[order_start],
        "wh": ln_wh[order_start],
        "status": status,
    }
    o_sort = np.argsort(ords["day"], kind="stable")
    ords = {k: v[o_sort] for k, v in ords.items()}
    l_sort = np.argsort(ln_day, kind="stable")
    ln = {k: v[l_sort] for k, v in ln.items()}
    ln_day, ln_wh, ln_disc, unit_price = ln_day[l_sort], ln_wh[l_sort], ln_disc[l_sort], unit_price[l_sort]
    line_number, ret_qty = line_number[l_sort], ret_qty[l_sort]

    def orders_table(a, b):
        return pa.table(
            {
                "order_id": _ids("o", ords["session"][a:b], 10),
                "user_id": user_ids.take(pa.array(ords["user"][a:b])),
                "ordered_at": ts(ords["t"][a:b]),
                "order_date": _dates(epoch_day0, ords["day"][a:b]),
                "warehouse_id": wh_ids.take(pa.array(ords["wh"][a:b])),
                "status": pa.array(ords["status"][a:b]),
            }
        )

    def lines_table(a, b):
        q = ln["qty"][a:b]
        return pa.table(
            {
                "order_id": _ids("o", ln["session"][a:b], 10),
                "line_number": pa.array(line_number[a:b].astype(np.int32)),
                "item_id": item_ids.take(pa.array(ln["item"][a:b])),
                "quantity": pa.array(q),
                "unit_price": pa.array(unit_price[a:b]),
                "order_date": _dates(epoch_day0, ln_day[a:b]),
                "discount_amount": pa.array(np.round(unit_price[a:b] * q * ln_disc[a:b], 2)),
                "returned_quantity": pa.array(ret_qty[a:b]),
            }
        )

    cell_item = np.repeat(np.arange(n_items), n_wh)
    cell_wh = np.tile(np.arange(n_wh), n_items)

    def inventory_table(a, b):
        days_ = np.arange(a, b)
        m = (cell_launch[None, :] - 1) <= days_[:, None]
        di, ci = np.nonzero(m)
        return pa.table(
            {
                "item_id": item_ids.take(pa.array(cell_item[ci])),
                "warehouse_id": wh_ids.take(pa.array(cell_wh[ci])),
                "snapshot_date": _dates(epoch_day0, days_[di]),
                "on_hand_units": pa.array(stock.on_hand[a:b][m]),
                "lead_time_days": pa.array(stock.lead_time[ci]),
                "on_order_units": pa.array(stock.on_order[a:b][m]),
            }
        )

    # ---------------------------------------------------------------- write: one commit (ml/lake.py)
    from ml.lake import begin

    with begin(lake_dir, kind="generate", source=f"generate {scale} seed={seed}") as commit:
        commit.supersede(lambda c: c.get("kind") == "generate" or c["stem"].startswith("gen"))

        def put(name, data, stem):
            commit.write(name, data, commit.stem("gen") + f"-{stem}")

        # small tables
        signup = start_us + users["signup_sec"].astype(np.int64) * 1_000_000
        put(
            "users",
            pa.table(
                {
                    "user_id": user_ids,
                    "signup_at": pa.array(signup, type=TS),
                    "country": pa.array(country_names[users["region"]]),
                    "region": pa.array(region_names[users["region"]]),
                    "gender": pa.array(users["gender"]),
                    "birth_year": pa.array(users["birth_year"]),
                }
            ),
            "world",
        )
        put(
            "items",
            items.assign(launch_date=items["launch_date"].dt.date)[
                ["item_id", "title", "description", "category_l1", "category_l2", "category_l3", "brand", "price", "launch_date"]
            ],
            "world",
        )
        put("warehouses", pd.DataFrame(WAREHOUSES, columns=["warehouse_id", "region", "country", "o", "m", "a", "p"]), "world")
        put(
            "promotions",
            pd.DataFrame(
                {
                    "promotion_id": promos["promotion_id"],
                    "item_id": promos["item_id"],
                    "start_date": (pd.Timestamp(start) + pd.to_timedelta(promos["start_day"], unit="D")).dt.date,
                    "end_date": (pd.Timestamp(start) + pd.to_timedelta(promos["end_day"], unit="D")).dt.date,
                    "discount_pct": promos["discount_pct"],
                    "warehouse_id": pd.Series(
                        np.array([w[0] for w in WAREHOUSES] + [None], dtype=object)[promos["warehouse_idx"].to_numpy()]
                    ),
                }
            ),
            "world",
        )
        put("weather", weather, "world")
        put("holidays", hol.assign(region=None), "world")

        edges = np.arange(0, D + sc.write_days, sc.write_days).clip(max=D)
        ev_b, o_b, l_b = (np.searchsorted(x, edges) for x in (ev_day, ords["day"], ln_day))
        for k, a in enumerate(_bar(list(edges[:-1]), progress, desc="write", unit="chunk")):
            stem = f"{k:05d}"
            put("events", events_table(ev_b[k], ev_b[k + 1]), stem)
            put("orders", orders_table(o_b[k], o_b[k + 1]), stem)
            put("order_lines", lines_table(l_b[k], l_b[k + 1]), stem)
            put("inventory_snapshots", inventory_table(int(a), int(edges[k + 1])), stem)
    gen_seconds = time.perf_counter() - t0

    # ---------------------------------------------------------------- the truth beside the data
    _save_truth(lake_dir, sc, seed, beh, rate, cats, items, users, user_ids, traffic, temp_anom, stock, n_wh, promos)
    manifest = finalize_lake(lake_dir)
    seconds = time.perf_counter() - t0
    rows = {n: s["rows"] for n, s in manifest["tables"].items()}
    return {
        "scale": scale,
        "seed": seed,
        "start_date": start.isoformat(),
        "end_date": END_DATE.isoformat(),
        "rows": rows,
        "events": n_events,
        "blocked_purchase_lines": blocked_lines,
        "skipped_reorders": skipped_reorders,  # rebuys of a purchase the stock blocked
        "seconds": round(seconds, 2),
        "generate_seconds": round(gen_seconds, 2),
        "events_per_second": round(n_events / seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "lake_dir": str(lake_dir),
    }


def _save_truth(lake_dir, sc, seed, beh, rate, cats, items, users, user_ids, traffic, temp_anom, stock, n_wh, promos) -> None:
    out = lake_dir / GEN_DIR
    out.mkdir(parents=True, exist_ok=True)
    L1 = catalog.L1
    ut = pa.table(
        {
            "user_id": user_ids,
            "region": pa.array(np.array([w[1] for w in WAREHOUSES])[users["region"]]),
            **{f"affinity_{c}": pa.array(users["affinity"][:, i]) for i, c in enumerate(L1)},
            **{
                f"favourite_brand_{c}": pa.array(np.array(cats.brands)[i * catalog.BRANDS_PER_L1 + users["fav_brand"][:, i]])
                for i, c in enumerate(L1)
            },
            "price_sensitivity": pa.array(users["price_sens"]),
            "activity": pa.array(users["activity"]),
            "browse_depth": pa.array(users["depth"]),
            "purchase_intent": pa.array(users["intent"]),
            "signup_day": pa.array(users["signup_day"]),
        }
    )
    pq.write_table(ut, out / "users_latent.parquet")
    cf = cats.frame
    l3 = items["l3_code"].to_numpy()
    pop = items["popularity"].to_numpy()
    it = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "category_l1": items["category_l1"],
            "category_l3": items["category_l3"],
            "brand": items["brand"],
            "popularity": pop / pd.Series(pop).groupby(l3).transform("sum").to_numpy(),
            "weather_temp_coef": cf["temp_coef"].to_numpy()[l3],
            "weather_rain_coef": cf["rain_coef"].to_numpy()[l3],
            "rel_log_price": items["rel_log_price"],
            "launch_day": items["launch_day"],
        }
    )
    pq.write_table(pa.Table.from_pandas(it, preserve_index=False), out / "items_latent.parquet")
    cat = cf.drop(columns=["base_price"]).assign(vocabulary=[" ".join(v) for v in cats.vocab], queries=["|".join(q) for q in cats.queries])
    pq.write_table(pa.Table.from_pandas(cat, preserve_index=False), out / "categories.parquet")
    dates = catalog.day_dates(sc.start_date, sc.days).date
    cal = pd.concat(
        [
            pd.DataFrame(
                {"region": w[1], "calendar_date": dates, "traffic_multiplier": traffic[r], "temperature_anomaly_10c": temp_anom[r]}
            )
            for r, w in enumerate(WAREHOUSES)
        ],
        ignore_index=True,
    )
    pq.write_table(pa.Table.from_pandas(cal, preserve_index=False), out / "calendar.parquet")
    pol = pd.DataFrame(
        {
            "item_id": np.repeat(items["item_id"].to_numpy(), n_wh),
            "warehouse_id": np.tile([w[0] for w in WAREHOUSES], len(items)),
            "lead_time_days": stock.lead_time,
            "reorder_point": stock.reorder_point,
            "order_up_to": stock.order_up_to,
        }
    )
    pq.write_table(pa.Table.from_pandas(pol, preserve_index=False), out / "inventory_policy.parquet")
    params = {
        "generator": "ml.generate",
        "written_at_note": "deterministic: the same scale and seed always give the same tables",
        "scale": asdict(sc),
        "seed": seed,
        "start_date": sc.start_date.isoformat(),
        "end_date": END_DATE.isoformat(),
        "session_rate": {
            "value": rate,
            "meaning": "Base sessions per user per day at traffic multiplier 1 and activity 1 (set from target_events)",
        },
        "behaviour": beh.to_json(),
        "warehouses": [
            {
                "warehouse_id": w[0],
                "region": w[1],
                "country": w[2],
                "utc_offset_hours": w[3],
                "temperature_mean_c": w[4],
                "temperature_amplitude_c": w[5],
                "warmest_day_of_year": w[6],
            }
            for w in WAREHOUSES
        ],
        "categories": {
            "category_l3_weather": {r.category_l3: {"temp_coef": r.temp_coef, "rain_coef": r.rain_coef} for r in cf.itertuples()},
            "brands": cats.brands,
        },
        "files": {
            "users_latent.parquet": "per user: category_l1 affinity (Dirichlet, rows sum to 1), favourite brand per category_l1, price sensitivity, activity, browse depth, purchase-intent logit offset, signup day",  # noqa: E501
            "items_latent.parquet": "per item: popularity within its category_l3, weather temperature/rain coefficients, log price relative to its category_l3, launch day",  # noqa: E501
            "categories.parquet": "per category_l3: tree, popularity within category_l1, weather coefficients, the text vocabulary and search queries",  # noqa: E501
            "calendar.parquet": "per region and day: traffic multiplier (weekly x yearly x holiday) and temperature anomaly (10 C units)",
            "inventory_policy.parquet": "per item x warehouse: lead time, reorder point, order-up-to level",
        },
        "n_promotions": int(len(promos)),
    }
    (out / "params.json").write_text(json.dumps(params, indent=2, default=str))
