"""Bybit v5 public streams: ``orderbook.{depth}.{symbol}``, ``allLiquidation.{symbol}``, ``publicTrade``.

Streams are Bybit topics. Books snapshot in-band (a resubscribe forces a fresh one);
Bybit asks for an application ping ``{"op": "ping"}`` every 20 s.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from streams.feeds.base import FrameRoute, VenueAdapter, ms_or_none

__all__ = ["LINEAR_WS_URL", "SPOT_WS_URL", "BybitLinear", "BybitSpot"]

LINEAR_WS_URL = "wss://stream.bybit.com/v5/public/linear"
SPOT_WS_URL = "wss://stream.bybit.com/v5/public/spot"
#: The topic a Bybit refusal names: ``error:handler not found,topic:orderbook.50.BTCUSDT``.
_REFUSED_TOPIC = re.compile(r"topic:([^,\s]+)")


class _Bybit(VenueAdapter):
    max_streams_per_connection = 200
    max_msgs_per_s = 5.0
    ping_interval_s = 20.0
    #: Spot accepts at most 10 args per subscribe request.
    streams_per_message = 10

    def _op(self, op: str, streams: Sequence[str]) -> list[str]:
        n = self.streams_per_message
        return [orjson.dumps({"op": op, "args": list(streams[i : i + n])}).decode() for i in range(0, len(streams), n)]

    def subscribe_messages(self, streams: Sequence[str]) -> list[str]:
        return self._op("subscribe", streams)

    def unsubscribe_messages(self, streams: Sequence[str]) -> list[str]:
        return self._op("unsubscribe", streams)

    def ping_message(self) -> str | None:
        return '{"op":"ping"}'

    def route(self, msg: Any) -> FrameRoute | None:
        if isinstance(msg, dict):
            topic = msg.get("topic")
            if isinstance(topic, str) and "data" in msg:
                return FrameRoute(topic, topic)
            if "op" in msg or "success" in msg:
                return None  # subscribe ack, pong
        raise ValueError("not a Bybit topic frame")

    def refusal(self, msg: Any) -> str | None:
        # {"success":false,"ret_msg":"error:handler not found,topic:orderbook.50.X","conn_id":"c","op":"subscribe"}
        if isinstance(msg, dict) and msg.get("success") is False:
            return f"{msg.get('op', '')}: {msg.get('ret_msg', '')}"
        return None

    def refused_stream(self, said: str) -> str | None:
        # "subscribe: error:handler not found,topic:orderbook.50.NOPEUSDT" names that topic; an
        # "already subscribed" names one that is served
        named = _REFUSED_TOPIC.search(said) if "already subscribed" not in said else None
        return named[1] if named else None

    def event_ts_ms(self, msg: Any) -> int | None:
        return ms_or_none(msg.get("ts"))

    def book_symbol(self, stream: str) -> str | None:
        parts = stream.split(".")
        return parts[2].upper() if len(parts) == 3 and parts[0] == "orderbook" else None


class BybitLinear(_Bybit):
    venue = "bybit-linear"

    def __init__(self, ws_url: str = LINEAR_WS_URL, rest_url: str | None = None) -> None:
        super().__init__(ws_url, rest_url)


class BybitSpot(_Bybit):
    venue = "bybit-spot"

    def __init__(self, ws_url: str = SPOT_WS_URL, rest_url: str | None = None) -> None:
        super().__init__(ws_url, rest_url)
