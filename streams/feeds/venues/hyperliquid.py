"""Hyperliquid streams: ``l2Book`` (a full book per block) and ``trades``.

Streams are written ``type:coin`` (``l2Book:BTC``). The server closes a connection with
no message for 60 s, so we send the application ping ``{"method": "ping"}`` every 30 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from streams.feeds.base import FrameRoute, VenueAdapter, data_ms

__all__ = ["WS_URL", "Hyperliquid"]

WS_URL = "wss://api.hyperliquid.xyz/ws"


class Hyperliquid(VenueAdapter):
    venue = "hyperliquid"
    max_streams_per_connection = 100
    max_msgs_per_s = 5.0
    ping_interval_s = 30.0
    streams_per_message = 1

    def __init__(self, ws_url: str = WS_URL, rest_url: str | None = None) -> None:
        super().__init__(ws_url, rest_url)

    def _method(self, method: str, streams: Sequence[str]) -> list[str]:
        out: list[str] = []
        for stream in streams:
            kind, _, coin = stream.partition(":")
            out.append(orjson.dumps({"method": method, "subscription": {"type": kind, "coin": coin}}).decode())
        return out

    def subscribe_messages(self, streams: Sequence[str]) -> list[str]:
        return self._method("subscribe", streams)

    def unsubscribe_messages(self, streams: Sequence[str]) -> list[str]:
        return self._method("unsubscribe", streams)

    def ping_message(self) -> str | None:
        return '{"method":"ping"}'

    def route(self, msg: Any) -> FrameRoute | None:
        if isinstance(msg, dict):
            channel = msg.get("channel")
            if channel in ("pong", "subscriptionResponse", "error"):
                return None
            data = msg.get("data")
            if channel == "l2Book" and isinstance(data, dict):
                return FrameRoute("l2Book", f"l2Book:{data.get('coin', '')}")
            if channel == "trades" and isinstance(data, list):
                coin = data[0].get("coin", "") if data and isinstance(data[0], dict) else ""
                return FrameRoute("trades", f"trades:{coin}")
        raise ValueError("not a Hyperliquid data frame")

    def refusal(self, msg: Any) -> str | None:
        # {"channel":"error","data":"Invalid subscription {...}"}
        if isinstance(msg, dict) and msg.get("channel") == "error":
            return str(msg.get("data", ""))
        return None

    def refused_stream(self, said: str) -> str | None:
        # 'Invalid subscription {"type":"l2Book","coin":"NOPE"}' names the stream l2Book:NOPE
        _, brace, rest = said.partition("{")
        try:
            sub = orjson.loads(brace + rest) if brace else None
        except orjson.JSONDecodeError:
            return None
        if isinstance(sub, dict) and isinstance(sub.get("type"), str) and isinstance(sub.get("coin"), str):
            return f"{sub['type']}:{sub['coin']}"
        return None

    def coalescible(self, route: FrameRoute) -> bool:
        return route.channel in ("l2Book", "bbo", "allMids")  # full snapshots on every push

    def event_ts_ms(self, msg: Any) -> int | None:
        return data_ms(msg, "time")

    def book_symbol(self, stream: str) -> str | None:
        kind, _, coin = stream.partition(":")
        return coin.upper() if kind == "l2Book" and coin else None
