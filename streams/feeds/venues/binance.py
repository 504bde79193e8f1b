"""Binance spot and USDⓈ-M futures: combined streams, split futures endpoints, REST depth.

Streams are Binance stream names (``btcusdt@depth@100ms``, ``!forceOrder@arr``). Since
2026-04-23 USDⓈ-M serves ``aggTrade``, ``markPrice`` and ``forceOrder`` only under
``/market`` and depth and bookTicker under ``/public``; the old address accepts the moved
subscriptions and then stays silent (the staleness watchdog catches that).
Limits: 10 incoming messages/s and 1024 streams per connection, 24 h connection life.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from streams.feeds.base import FrameRoute, VenueAdapter, data_ms

__all__ = [
    "SPOT_REST_URL",
    "SPOT_WS_URL",
    "USDM_REST_URL",
    "USDM_WS_URL",
    "BinanceSpot",
    "BinanceUsdm",
    "usdm_route",
]

SPOT_WS_URL = "wss://stream.binance.com:9443"
SPOT_REST_URL = "https://api.binance.com"
USDM_WS_URL = "wss://fstream.binance.com"
USDM_REST_URL = "https://fapi.binance.com"

_DEPTH = re.compile(r"^([a-z0-9]+)@depth(@\d+ms)?$")
#: Streams whose every frame is a whole state of the stream: a symbol's best bid/ask, mark
#: price or partial-depth snapshot, or every symbol's mark price (``!markPrice@arr``). Not
#: ``!bookTicker``: its frames are single symbols' updates, the newest would hide the others.
_COALESCIBLE = re.compile(r"(@bookticker|markprice(@arr)?(@1s)?|@depth(5|10|20)(@\d+ms)?)$")
_STREAM_PREFIX = b'{"stream":"'
_PREFIX_LEN = len(_STREAM_PREFIX)
#: Stream names remembered by peek_route (subscriptions are far fewer; garbage cannot grow it).
_PEEK_CACHE = 4096
_MARKET_STREAMS = ("@aggtrade", "@markprice", "markprice@arr", "@forceorder", "forceorder@arr", "@kline")


def usdm_route(stream: str) -> str:
    """The USDⓈ-M path serving ``stream``: ``/market`` (trades, mark price, liquidations) or ``/public``."""
    low = stream.lower()
    return "/market" if any(tag in low for tag in _MARKET_STREAMS) else "/public"


class _Binance(VenueAdapter):
    max_streams_per_connection = 1024
    #: Binance allows 10 incoming messages/s per connection; half of it leaves room for pongs.
    max_msgs_per_s = 5.0
    #: Binance cuts connections at 24 h: reconnect on our terms 30 min before.
    max_connection_life_s = 23.5 * 3600
    streams_per_message = 100
    depth_path = ""
    depth_limit = 1000

    def __init__(self, ws_url: str, rest_url: str | None = None) -> None:
        super().__init__(ws_url, rest_url)
        self._next_id = 0
        self._peeked: dict[bytes, FrameRoute] = {}

    def _messages(self, method: str, streams: Sequence[str]) -> list[str]:
        out: list[str] = []
        n = self.streams_per_message
        for i in range(0, len(streams), n):
            self._next_id += 1
            msg = {"method": method, "params": list(streams[i : i + n]), "id": self._next_id}
            out.append(orjson.dumps(msg).decode())
        return out

    def subscribe_messages(self, streams: Sequence[str]) -> list[str]:
        return self._messages("SUBSCRIBE", streams)

    def unsubscribe_messages(self, streams: Sequence[str]) -> list[str]:
        return self._messages("UNSUBSCRIBE", streams)

    def route(self, msg: Any) -> FrameRoute | None:
        if isinstance(msg, dict):
            stream = msg.get("stream")
            if isinstance(stream, str) and "data" in msg:
                return FrameRoute(stream, stream)
            if "id" in msg and ("result" in msg or "error" in msg):
                return None  # subscription ack / error reply
        raise ValueError("not a combined-stream frame")

    def refusal(self, msg: Any) -> str | None:
        # {"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":3}
        error = msg.get("error") if isinstance(msg, dict) else None
        if isinstance(error, dict):
            return f"{error.get('code', '')} {error.get('msg', '')}".strip()
        return None

    def peek_route(self, raw_bytes: bytes) -> FrameRoute | None:
        # Binance writes the stream name first: {"stream":"btcusdt@bookTicker","data":{...}}
        if not raw_bytes.startswith(_STREAM_PREFIX):
            return None
        name = raw_bytes[_PREFIX_LEN : raw_bytes.find(b'"', _PREFIX_LEN)]
        route = self._peeked.get(name)
        if route is None and name.isascii() and b"\\" not in name and len(self._peeked) < _PEEK_CACHE:
            stream = name.decode()
            route = self._peeked[name] = FrameRoute(stream, stream)
        return route

    def coalescible(self, route: FrameRoute) -> bool:
        return _COALESCIBLE.search(route.channel.lower()) is not None

    def event_ts_ms(self, msg: Any) -> int | None:
        return data_ms(msg, "E", "T")

    def book_symbol(self, stream: str) -> str | None:
        m = _DEPTH.match(stream.lower())
        return m.group(1).upper() if m else None

    def snapshot_request(self, symbol: str) -> tuple[str, dict[str, str]] | None:
        if self.rest_url is None:
            return None
        return f"{self.rest_url}{self.depth_path}", {"symbol": symbol.upper(), "limit": str(self.depth_limit)}


class BinanceSpot(_Binance):
    venue = "binance-spot"
    depth_path = "/api/v3/depth"

    def __init__(self, ws_url: str = SPOT_WS_URL, rest_url: str | None = SPOT_REST_URL) -> None:
        super().__init__(ws_url, rest_url)

    def endpoint(self, stream: str) -> str:
        return f"{self.ws_url}/stream"


class BinanceUsdm(_Binance):
    venue = "binance-usdm"
    depth_path = "/fapi/v1/depth"

    def __init__(self, ws_url: str = USDM_WS_URL, rest_url: str | None = USDM_REST_URL) -> None:
        super().__init__(ws_url, rest_url)

    def endpoint(self, stream: str) -> str:
        return f"{self.ws_url}{usdm_route(stream)}/stream"
