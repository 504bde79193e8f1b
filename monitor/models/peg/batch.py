"""The peg monitor's vectorised path: a whole batch of prices applied to a
:class:`monitor.models.peg.asset_peg.AssetPeg` at once, exactly the per-event result or nothing.

Two cases are taken whole: *calm* (every price inside the first band, nothing pending) and
*steady* (out of band, but no timer reaches its duration and no venue-local state flips
inside the batch). Anything else returns False and the batch goes event by event through
:meth:`monitor.models.peg.asset_peg.AssetPeg.on_price`. Pure: time comes with the prices.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from monitor.models.peg.asset_peg import AssetPeg
from monitor.models.peg.bands import INDEX_VENUE, PegTracker, PriceColumns, SteadyPlan, weighted_median_rows

__all__ = ["apply_batch"]


def apply_batch(peg: AssetPeg, batch: PriceColumns) -> bool:
    """Apply a whole batch of USD prices at once; exactly the per-event result.

    Two vectorised cases, both exactly
    equivalent to feeding the events one by one through :meth:`AssetPeg.on_price`:

    - *calm*: every price inside the first band and no tracker has anything pending,
      so no event can change a level and only the last price, depth and deviation of
      each venue (and of the index) survive;
    - *steady* (:func:`_try_steady`): some venue is out of its band, but no timer can
      reach its duration within the batch and no venue-local state can flip.

    Returns False, changing nothing, when the batch needs the per-event path (a
    level or venue-local change inside it, or a venue seen for the first time: the
    first price of a venue creates its state, and maybe the index's, in event order).
    """
    rules = peg.rules
    if not len(batch.src):
        return True
    if any(venue not in peg.prices for venue in batch.venues):
        return False  # a new venue: on_price creates its state (and the index's) in order
    if _may_go_stale(peg, int(batch.ts_ms.max()), batch.venues):
        return False  # a source holding state may go stale: on_price resolves it in order
    peg.next_stale_check_ms = 0  # a returning source may go stale sooner: rescan next time
    batch = _declared_sources(peg, batch)
    venues, src, ts_ms, price_usd, depth_usd = (
        batch.venues, batch.src, batch.ts_ms, batch.price_usd, batch.depth_usd
    )
    if not len(src):
        return True  # thin prints only: nothing moves
    dev = (price_usd / rules.peg_usd - 1.0) * 10_000.0
    # Calm also means every price inside the normal band and every tracker in it
    # already: then no "in band since" timer moves either.
    if float(np.abs(dev).max()) >= min(rules.thresholds_bps[0], rules.normal_band_bps) or any(
        tracker.level or tracker.above_since_ms[0] is not None or tracker.in_band_since_ms is None
        for tracker in peg.trackers.values()
    ):
        return _try_steady(peg, batch, dev)
    # Last event of each venue (several symbols may quote one venue).
    # Last row, and last row with a depth, of each source; then of each venue.
    last_of = np.full(len(venues), -1, dtype=np.int64)
    np.maximum.at(last_of, src, np.arange(len(src), dtype=np.int64))
    with_depth = np.flatnonzero(depth_usd != 0.0)
    last_depth_of = np.full(len(venues), -1, dtype=np.int64)
    np.maximum.at(last_depth_of, src[with_depth], with_depth)
    last_row: dict[str, int] = {}
    last_depth_row: dict[str, int] = {}
    for venue, last, last_depth in zip(venues, last_of.tolist(), last_depth_of.tolist(), strict=True):
        if last > last_row.get(venue, -1):
            last_row[venue] = last
        if last_depth >= 0 and last_depth > last_depth_row.get(venue, -1):
            last_depth_row[venue] = last_depth
    for venue in sorted((v for v, row in last_row.items() if row >= 0), key=last_row.__getitem__):
        row = last_row[venue]
        ts = int(ts_ms[row])
        vp = peg.prices[venue]
        depth_row = last_depth_row.get(venue)
        vp.price_usd = float(price_usd[row])
        if depth_row is not None:
            vp.depth_usd = float(depth_usd[depth_row])
        vp.ts_ms = ts
        tracker = peg.tracker(venue)
        tracker.last_dev_bps = float(dev[row])
        tracker.last_ts_ms = ts
    if len(peg.prices) > 1:
        ts_last = int(ts_ms[-1])
        index = peg.index_price(ts_last)
        if index is not None:
            idx_tracker = peg.tracker(INDEX_VENUE)
            idx_tracker.last_dev_bps = (index[0] / rules.peg_usd - 1.0) * 10_000.0
            idx_tracker.last_ts_ms = ts_last
    return True


def _declared_sources(peg: AssetPeg, batch: PriceColumns) -> PriceColumns:
    """The batch as :meth:`AssetPeg.on_price` sees it: thin prints dropped, depths weighted."""
    rules = peg.rules
    if not rules.min_depths_usd and not rules.weights:
        return batch
    min_depth = np.array([rules.min_depths_usd.get(v, 0.0) for v in batch.venues])[batch.src]
    keep = ~((batch.depth_usd > 0.0) & (batch.depth_usd < min_depth))
    src = batch.src[keep]
    weight = np.array([rules.weights.get(v, 1.0) for v in batch.venues])[src]
    return PriceColumns(
        batch.venues, src, batch.ts_ms[keep], batch.price_usd[keep], batch.depth_usd[keep] * weight
    )


def _may_go_stale(peg: AssetPeg, last_ts_ms: int, in_batch: list[str]) -> bool:
    """True when a source with a level or a timer might go stale by ``last_ts_ms``.

    Conservative (its price before the batch is compared with the batch's last time):
    a True only sends the batch down the per-event path.
    """
    fresh = 0
    for venue, vp in peg.prices.items():
        if last_ts_ms > vp.ts_ms + peg.rules.stale_window_ms(venue):
            tracker = peg.trackers.get(venue)
            # A source priced in the batch may start a timer there, then go stale.
            if venue in in_batch or (tracker is not None and not tracker.inert):
                return True
        else:
            fresh += 1
    # The last fresh source going stale takes the index's level with it.
    index = peg.trackers.get(INDEX_VENUE)
    return fresh == 0 and bool(peg.prices) and index is not None and not index.inert


def _try_steady(peg: AssetPeg, batch: PriceColumns, dev_bps: NDArray[np.float64]) -> bool:
    """The steady case of :func:`apply_batch`: out of band, but no state flips.

    Rebuilds, for every event k, what :meth:`AssetPeg.on_price` would see after it: each
    venue's latest price, depth and time (forward-filled columns), hence the index
    (:func:`weighted_median_rows` over the fresh venues) and each venue-local
    reference. Then every tracker is planned (:meth:`PegTracker.plan_steady`) and
    every venue-local test re-run per event; any possible change → False.
    """
    rules = peg.rules
    venues, src, ts_ms, price_usd, depth_usd = (
        batch.venues, batch.src, batch.ts_ms, batch.price_usd, batch.depth_usd
    )
    names = list(peg.prices)
    column = {venue: c for c, venue in enumerate(names)}
    if any(venue not in peg.trackers for venue in venues):
        return False
    n, width = len(src), len(names)
    ev_col = np.array([column[venue] for venue in venues], dtype=np.int64)[src]
    rows = np.arange(n, dtype=np.int64)
    hit = ev_col[:, None] == np.arange(width, dtype=np.int64)[None, :]
    # Row of each column's latest event up to and including event k (-1: none yet).
    last = np.maximum.accumulate(np.where(hit, rows[:, None], -1), axis=0)
    last_depth = np.maximum.accumulate(
        np.where(hit & (depth_usd != 0.0)[:, None], rows[:, None], -1), axis=0
    )
    before = list(peg.prices.values())
    px = np.where(last >= 0, price_usd[np.maximum(last, 0)], [vp.price_usd for vp in before])
    seen = np.where(last >= 0, ts_ms[np.maximum(last, 0)], [vp.ts_ms for vp in before])
    weight = np.where(
        last_depth >= 0, depth_usd[np.maximum(last_depth, 0)], [vp.depth_usd for vp in before]
    )
    windows = np.array([rules.stale_window_ms(venue) for venue in names], dtype=np.int64)
    fresh = seen >= ts_ms[:, None] - windows[None, :]

    plans: list[tuple[PegTracker, SteadyPlan]] = []
    for c, venue in enumerate(names):
        mine = ev_col == c
        if not mine.any():
            continue
        tracker = peg.trackers[venue]
        plan = tracker.plan_steady(ts_ms[mine], dev_bps[mine], rules)
        if plan is None:
            return False
        plans.append((tracker, plan))
    new_index: PegTracker | None = None
    if width > 1:
        index, ok = weighted_median_rows(px, weight, fresh)
        if ok.any():
            idx_tracker = peg.trackers.get(INDEX_VENUE)
            if idx_tracker is None:
                idx_tracker = new_index = PegTracker(n_bands=len(rules.thresholds_bps))
            idx_dev = (index[ok] / rules.peg_usd - 1.0) * 10_000.0
            plan = idx_tracker.plan_steady(ts_ms[ok], idx_dev, rules)
            if plan is None:
                return False
            plans.append((idx_tracker, plan))
    if (peg.elevated or peg.venue_local) and not _venue_local_steady(peg, px, weight, fresh, ts_ms, column):
        return False

    for c, vp in enumerate(before):
        if last[-1, c] >= 0:
            vp.price_usd = float(px[-1, c])
            vp.depth_usd = float(weight[-1, c])
            vp.ts_ms = int(seen[-1, c])
    if new_index is not None:
        peg.trackers[INDEX_VENUE] = new_index
    for tracker, plan in plans:
        tracker.apply(plan)
    return True


def _venue_local_steady(
    peg: AssetPeg,
    px: NDArray[np.float64],
    weight: NDArray[np.float64],
    fresh: NDArray[np.bool_],
    ts_ms: NDArray[np.int64],
    column: dict[str, int],
) -> bool:
    """True when ``AssetPeg._check_venue_local`` would flip nothing at any event (levels fixed)."""
    rules = peg.rules
    others = np.ones(fresh.shape[1], dtype=np.bool_)
    px_abs_dev = np.abs((px / rules.peg_usd - 1.0) * 10_000.0)
    for venue, tracker in peg.trackers.items():
        if venue == INDEX_VENUE:
            continue
        active_level = peg.venue_local.get(venue, 0)
        if tracker.level < rules.venue_local_level:
            if active_level:
                return False  # no reference at this level: the episode ends
            continue
        others[:] = True
        others[column[venue]] = False
        ref, ok = weighted_median_rows(px, weight, fresh & others)
        ref_dev = (ref / rules.peg_usd - 1.0) * 10_000.0
        limit = rules.normal_band_bps * (rules.ref_exit_factor if active_level else 1.0)
        in_band = (fresh & others & (px_abs_dev < limit)).sum(axis=1)
        with np.errstate(invalid="ignore"):
            is_local = ok & (np.abs(ref_dev) < limit) & (in_band >= rules.min_witnesses)
        if tracker.level > active_level and is_local.any():
            return False
        if active_level and not is_local.all():
            return False
    return True
