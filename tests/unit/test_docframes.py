"""Frames written from the venues' documentation examples, for what the recorded sessions lack.

``tests/fixtures/docframes/docframes.json``: each group names the documentation page its
frames come from, and each frame its expected outcome: the events it decodes to, the
local book after it, or the dead-letter reason. Covered: Binance's combined-stream
wrapper, a USDⓈ-M delivery contract in every channel, OKX books with ``seqId`` /
``prevSeqId`` (heartbeat and gap), an OKX option, Bybit ``allLiquidation`` and a USDC
perpetual, Hyperliquid ``l2Book`` and ``trades``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.config import EngineConfig
from monitor.ingest.frames import Ingest
from monitor.ingest.wire import is_book_channel, normalize
from monitor.protocol import DeadLetter

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "docframes" / "docframes.json"
GROUPS: list[dict[str, Any]] = orjson.loads(FIXTURE.read_bytes())["groups"]


def _events(ingest: Ingest, frame: dict[str, Any]) -> list[dict[str, Any]]:
    events = normalize(frame["venue"], frame["channel"], frame["raw"], frame["recv_ts_ms"],
                       ingest.aliases, ingest.max_future_skew_ms)
    return [{"kind": e.kind, "symbol": e.symbol, "base": e.base, "quote": e.quote,
             "f1": e.f1, "f2": e.f2, "f3": e.f3} for e in events]


def _book(ingest: Ingest, frame: dict[str, Any], want: dict[str, Any]) -> None:
    sync = ingest.book(frame["venue"], want["symbol"])
    assert sync is not None
    assert sync.valid == want["valid"]
    if want["valid"]:
        assert [list(x) for x in sync.book.bids.items()] == want["bids"]
        assert [list(x) for x in sync.book.asks.items()] == want["asks"]


@pytest.mark.parametrize("group", GROUPS, ids=[g["name"] for g in GROUPS])
def test_documented_frames(group: dict[str, Any]) -> None:
    assert group["page"].startswith("https://")
    ingest = Ingest(EngineConfig())
    for frame in group["frames"]:
        out = list(ingest.feed(frame["venue"], frame["channel"], frame["raw"], frame["recv_ts_ms"],
                               orjson.dumps(frame["raw"])))
        dead = [o.reason for o in out if isinstance(o, DeadLetter)]
        expect = frame["expect"]
        if expect["outcome"] == "reject":
            assert dead == [expect["reason"]]
            continue
        assert dead == []
        if "book" in expect:
            assert is_book_channel(frame["venue"], frame["channel"])
            _book(ingest, frame, expect["book"])
        else:
            got = _events(ingest, frame)
            assert got == [pytest.approx(e) for e in expect["events"]]
