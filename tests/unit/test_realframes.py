"""Regression corpus: every frame Binance, Bybit and OKX really sent, replayed through ingest.

``../shared/data/realframes/`` holds live sessions recorded by cryptofeed (provenance and
the expected outcome of each frame in its ``SOURCES.md``). Each segment is replayed in
order through one :class:`monitor.ingest.frames.Ingest`, as a capture would be:

- each frame's outcome is the expected one (accepted, or dead-lettered with that reason);
- the decoded fields of every trade and quote equal the frame's own fields, decoded here
  independently (price, quantity in base units, aggressor side, asset and quote);
- after every book frame, each local book ingest keeps equals a book rebuilt here from the
  venue's documented procedure (FEEDS.md: Binance snapshot + diffs, Bybit snapshot/delta),
  level for level, and is valid whenever the rebuilt one is.

The OKX session is preceded by its ``contract_values`` frame (``okx-contract-values.json``,
from the same session's instrument bodies), as a live recording starts with one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.config import EngineConfig
from monitor.events import KIND_QUOTE, KIND_TRADE
from monitor.ingest.frames import CONTRACT_VALUES_CHANNEL, Ingest
from monitor.ingest.wire import is_book_channel, normalize
from monitor.protocol import DeadLetter

REALFRAMES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "realframes"
FILES = (
    "cryptofeed-binance-spot-2021-10.json",
    "cryptofeed-binance-usdm-2021-07.json",
    "cryptofeed-bybit-v5-2025-06.json",
    "cryptofeed-bybit-v5-2026-08.json",
    "cryptofeed-okx-v5-2022-05.json",
)
#: Asset and quote of every symbol in the sessions, written out from the venues' listings
#: (not derived by the code under test). OKX ``BTC-USD-220527`` is a dated future.
PAIRS: dict[str, tuple[str, str]] = {
    "NKNUSDT": ("NKN", "USDT"), "BLZETH": ("BLZ", "ETH"), "LRCBTC": ("LRC", "BTC"),
    "RUNEEUR": ("RUNE", "EUR"), "SUSHIUSDT": ("SUSHI", "USDT"), "AKROUSDT": ("AKRO", "USDT"),
    "KEEPUSDT": ("KEEP", "USDT"), "CTKUSDT": ("CTK", "USDT"), "BANDUSDT": ("BAND", "USDT"),
    "RADUSDT": ("RAD", "USDT"), "SNTUSDT": ("SNT", "USDT"), "AIOZUSDT": ("AIOZ", "USDT"),
    "OPUSDC": ("OP", "USDC"), "TUSDUSDT": ("TUSD", "USDT"), "KCSUSDT": ("KCS", "USDT"),
    "CPOOLUSDT": ("CPOOL", "USDT"), "ARBUSDC": ("ARB", "USDC"), "MASAUSDT": ("MASA", "USDT"),
    "BTCUSDT": ("BTC", "USDT"), "ETHUSDT": ("ETH", "USDT"), "SOLUSDT": ("SOL", "USDT"),
    "DOGEUSDT": ("DOGE", "USDT"), "BTC-USDT": ("BTC", "USDT"), "UNI-USD-SWAP": ("UNI", "USD"),
    "BTC-USD-220527": ("BTC-20220527", "USD"),
}


def _load(name: str) -> dict[str, Any]:
    path = REALFRAMES / name
    if not path.exists():
        pytest.fail(f"real venue frames not found at {path} (expected ../shared beside the repo)")
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


def _okx_contract_values() -> dict[str, Any]:
    return _load("okx-contract-values.json")


# -- an independent book, from FEEDS.md's procedures --------------------------------------


@dataclass
class RefBook:
    """A local book rebuilt by the documented procedure, with plain dicts."""

    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    live: bool = False
    last_id: int = -1
    pending: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for px, qty, *_ in levels:
                if float(qty) == 0.0:
                    side.pop(float(px), None)
                else:
                    side[float(px)] = float(qty)

    def load(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.bids, self.asks = {}, {}
        self.apply(bids, asks)


def _binance_diff(book: RefBook, diff: dict[str, Any], futures: bool) -> None:
    """Binance: drop stale diffs; the first must straddle the snapshot id; then continuity."""
    first, last = diff["U"], diff["u"]
    if not book.live:
        if last < book.last_id or (not futures and last <= book.last_id):
            return
        target = book.last_id if futures else book.last_id + 1
        assert first <= target <= last, "snapshot older than the stream"
        book.live = True
    elif futures:
        assert diff["pu"] == book.last_id, "futures diff breaks pu continuity"
    else:
        assert first == book.last_id + 1, "spot diff breaks U continuity"
    book.apply(diff["b"], diff["a"])
    book.last_id = last


def _ref_apply(books: dict[str, RefBook], venue: str, channel: str, raw: dict[str, Any]) -> str:
    """Apply one book frame to the reference books; the symbol it names."""
    if venue.startswith("binance"):
        futures = venue == "binance-usdm"
        if channel.endswith("@depthSnapshot"):
            symbol = channel.split("@", maxsplit=1)[0].upper()
            book = books.setdefault(symbol, RefBook())
            book.load(raw["bids"], raw["asks"])
            book.last_id, book.live = raw["lastUpdateId"], False
            pending, book.pending = book.pending, []
            for diff in pending:
                _binance_diff(book, diff, futures)
            return symbol
        diff = raw.get("data", raw)
        book = books.setdefault(diff["s"], RefBook())
        if book.last_id < 0:
            book.pending.append(diff)
        else:
            _binance_diff(book, diff, futures)
        return str(diff["s"])
    data = raw["data"]
    book = books.setdefault(data["s"], RefBook())
    if raw["type"] == "snapshot":
        book.load(data["b"], data["a"])
        book.live = True
    else:
        book.apply(data["b"], data["a"])
    return str(data["s"])


# -- independent decoding of trades and quotes ------------------------------------------


def _expected_prints(venue: str, channel: str, raw: dict[str, Any], ct: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    """(kind, symbol, f1, f2, f3) of each print or quote a frame carries, decoded here."""
    if venue.startswith("binance"):
        d = raw.get("data", raw)
        if channel.endswith("@bookTicker"):
            yield KIND_QUOTE, d["s"], float(d["b"]), float(d["a"]), float(d["B"])
        else:
            yield KIND_TRADE, d["s"], float(d["p"]), float(d["q"]), -1.0 if d["m"] else 1.0
    elif venue.startswith("bybit"):
        for t in raw["data"]:
            yield KIND_TRADE, t["s"], float(t["p"]), float(t["v"]), 1.0 if t["S"] == "Buy" else -1.0
    else:
        for t in raw["data"]:
            px, sz, inst = float(t["px"]), float(t["sz"]), t["instId"]
            family = "-".join(inst.split("-")[:2])
            if inst.count("-") >= 2:
                entry = ct["values"][family]
                base = family.split("-")[0]
                sz = sz * entry["ct_val"] if entry["ct_val_ccy"] == base else sz * entry["ct_val"] / px
            yield KIND_TRADE, inst, px, sz, 1.0 if t["side"] == "buy" else -1.0


def _segments() -> Iterator[tuple[str, dict[str, Any]]]:
    for name in FILES:
        for segment in _load(name)["segments"]:
            yield name, segment


def _check_outcome(frame: dict[str, Any], dead: list[DeadLetter]) -> None:
    expect = frame["expect"]
    if expect["outcome"] == "accept":
        assert dead == [], f"{frame['fid']}: refused {[(d.reason, d.detail) for d in dead]}"
    else:
        assert [d.reason for d in dead] == [expect["reason"]], frame["fid"]


def _check_book(ingest: Ingest, refs: dict[str, RefBook], frame: dict[str, Any]) -> None:
    symbol = _ref_apply(refs, frame["venue"], frame["channel"], frame["raw"])
    ref, sync = refs[symbol], ingest.book(frame["venue"], symbol)
    assert sync is not None, frame["fid"]
    assert sync.valid == ref.live, frame["fid"]
    if ref.live:
        assert dict(sync.book.bids) == ref.bids, frame["fid"]
        assert dict(sync.book.asks) == ref.asks, frame["fid"]


def _check_prints(ingest: Ingest, frame: dict[str, Any], ct: dict[str, Any]) -> None:
    venue, channel, raw = frame["venue"], frame["channel"], frame["raw"]
    table = ingest.contract_values.get(venue)
    args = (venue, channel, raw, frame["recv_ts_ms"], ingest.aliases, ingest.max_future_skew_ms)
    events = normalize(*args, table) if table is not None else normalize(*args)
    got = [(e.kind, e.symbol, e.f1, pytest.approx(e.f2), e.f3, (e.base, e.quote)) for e in events]
    want = [(*p, PAIRS[p[1]]) for p in _expected_prints(venue, channel, raw, ct)]
    assert got == want, frame["fid"]


@pytest.mark.parametrize("name", FILES)
def test_every_real_frame_has_its_expected_outcome_fields_and_book(name: str) -> None:
    ct = _okx_contract_values()
    counted = 0
    for file_name, segment in _segments():
        if file_name != name:
            continue
        ingest = Ingest(EngineConfig())
        if name.startswith("cryptofeed-okx"):
            first_ts = segment["frames"][0]["recv_ts_ms"]
            assert list(ingest.feed("okx", CONTRACT_VALUES_CHANNEL, ct, first_ts, orjson.dumps(ct))) == []
        refs: dict[str, RefBook] = {}
        for frame in segment["frames"]:
            raw_bytes = orjson.dumps(frame["raw"])
            out = list(ingest.feed(frame["venue"], frame["channel"], frame["raw"], frame["recv_ts_ms"], raw_bytes))
            _check_outcome(frame, [o for o in out if isinstance(o, DeadLetter)])
            counted += 1
            if frame["expect"]["outcome"] != "accept":
                continue
            if is_book_channel(frame["venue"], frame["channel"]):
                _check_book(ingest, refs, frame)
            else:
                _check_prints(ingest, frame, ct)
        assert ingest.stats.frames == len(segment["frames"]) + (1 if name.startswith("cryptofeed-okx") else 0)
    assert counted > 0


@pytest.mark.parametrize("previous_id", ["1" + "0" * 400, "18446744073709551616", "-9223372036854775809"])
def test_an_update_id_beyond_64_bits_is_refused_not_a_crash(previous_id: str) -> None:
    """Found by a mutation pass over these sessions: a USDⓈ-M diff whose ``pu`` is a decimal
    string of 400 digits broke the book's gap event (an int past a float's range), a
    traceback out of the replay. Ids are 64-bit on every venue: past that, a dead letter (a
    JSON integer past 64 bits is a float to orjson, refused as an id already)."""
    frames = _load("cryptofeed-binance-usdm-2021-07.json")["segments"][0]["frames"][:300]
    at = next(i for i, f in enumerate(frames) if f["channel"] == "ctkusdt@depth@100ms" and i > 200)
    bad = {**frames[at], "raw": {**frames[at]["raw"], "data": {**frames[at]["raw"]["data"], "pu": previous_id}}}
    ingest = Ingest(EngineConfig())
    dead = []
    for f in [*frames[:at], bad, *frames[at + 1:]]:
        outs = list(ingest.feed(f["venue"], f["channel"], f["raw"], f["recv_ts_ms"], orjson.dumps(f["raw"])))
        dead += [o for o in outs if isinstance(o, DeadLetter)]
    list(ingest.finish())
    assert [(d.reason, d.channel) for d in dead] == [("out_of_range", "ctkusdt@depth@100ms")]
    assert "'pu' is beyond a 64-bit integer" in dead[0].detail
