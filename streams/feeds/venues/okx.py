"""OKX v5 public streams: ``books``, ``liquidation-orders`` (by instType), ``trades``.

Streams are written ``channel:instId`` (``books:BTC-USDT-SWAP``) or ``channel:instType``
(``liquidation-orders:SWAP``). OKX drops a connection idle for 30 s: we send the text
``ping`` every 20 s and it answers ``pong`` (not JSON).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from streams.feeds.base import FrameRoute, VenueAdapter, data_ms

__all__ = ["WS_URL", "Okx", "okx_arg"]

WS_URL = "wss://ws.okx.com:8443/ws/v5/public"
_BY_TYPE = {"liquidation-orders"}
#: Channels whose every push is a whole state (best bid/ask, 5-level snapshots, tickers, marks).
_COALESCIBLE = frozenset({"bbo-tbt", "books5", "tickers", "mark-price", "index-tickers"})
#: The subscription an OKX refusal names: ``channel:books,instId:BTC-USDT`` (or instType, instFamily).
_REFUSED = re.compile(r"channel:([\w-]+),inst(?:Id|Type|Family):([\w-]+)")


def okx_arg(stream: str) -> dict[str, str]:
    """Subscription arg of ``channel:instId`` / ``channel:instType``."""
    channel, _, target = stream.partition(":")
    if not target:
        raise ValueError(f"OKX stream {stream!r} must be channel:instId or channel:instType")
    return {"channel": channel, "instType" if channel in _BY_TYPE else "instId": target}


class Okx(VenueAdapter):
    venue = "okx"
    max_streams_per_connection = 200
    max_msgs_per_s = 3.0
    ping_interval_s = 20.0
    streams_per_message = 20

    def __init__(self, ws_url: str = WS_URL, rest_url: str | None = None) -> None:
        super().__init__(ws_url, rest_url)

    def _op(self, op: str, streams: Sequence[str]) -> list[str]:
        n = self.streams_per_message
        return [
            orjson.dumps({"op": op, "args": [okx_arg(s) for s in streams[i : i + n]]}).decode()
            for i in range(0, len(streams), n)
        ]

    def subscribe_messages(self, streams: Sequence[str]) -> list[str]:
        return self._op("subscribe", streams)

    def unsubscribe_messages(self, streams: Sequence[str]) -> list[str]:
        return self._op("unsubscribe", streams)

    def ping_message(self) -> str | None:
        return "ping"

    def is_control_text(self, text: str) -> bool:
        return text == "pong"

    def route(self, msg: Any) -> FrameRoute | None:
        if isinstance(msg, dict):
            arg = msg.get("arg")
            if isinstance(arg, dict) and "data" in msg:
                channel = str(arg.get("channel", ""))
                target = arg.get("instId") or arg.get("instType") or ""
                return FrameRoute(channel, f"{channel}:{target}")
            if "event" in msg:
                return None  # subscribe / unsubscribe / error event
        raise ValueError("not an OKX push frame")

    def refusal(self, msg: Any) -> str | None:
        # {"event":"error","code":"60018","msg":"Wrong URL or channel:books,instId:X doesn't exist ...","connId":"a"}
        if isinstance(msg, dict) and msg.get("event") == "error":
            return f"{msg.get('code', '')} {msg.get('msg', '')}".strip()
        return None

    def closing_notice(self, msg: Any) -> str | None:
        # {"event":"notice","code":"64008","msg":"The connection will soon be closed for a service upgrade. ..."}:
        # sent about 60 s ahead (OKX v5 docs, "Notification"); the client is to reconnect.
        if isinstance(msg, dict) and msg.get("event") == "notice" and msg.get("code") == "64008":
            return f"64008 {msg.get('msg', '')}".strip()
        return None

    def refused_stream(self, said: str) -> str | None:
        # "... channel:books,instId:NOPE-USDT doesn't exist ..." names the stream books:NOPE-USDT
        named = _REFUSED.search(said)
        return f"{named[1]}:{named[2]}" if named else None

    def coalescible(self, route: FrameRoute) -> bool:
        return route.channel in _COALESCIBLE

    def event_ts_ms(self, msg: Any) -> int | None:
        return data_ms(msg, "ts")

    def book_symbol(self, stream: str) -> str | None:
        channel, _, inst = stream.partition(":")
        return inst.upper() if channel == "books" and inst else None
