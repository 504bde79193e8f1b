"""Each venue's refusal of a request (a subscription to a stream it does not have), told
apart from its acks and pongs, with the venue's own words. Frames as the venues send them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.feeds.base import VenueAdapter
from streams.feeds.venues.binance import BinanceSpot
from streams.feeds.venues.bybit import BybitLinear
from streams.feeds.venues.hyperliquid import Hyperliquid
from streams.feeds.venues.okx import Okx

CASES: list[tuple[VenueAdapter, str, str | None]] = [
    (BinanceSpot(), '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":3}',
     "2 Invalid request: invalid stream"),
    (BinanceSpot(), '{"result":null,"id":1}', None),
    (BybitLinear(), '{"success":false,"ret_msg":"error:handler not found,topic:orderbook.50.NOPEUSDT",'
                    '"conn_id":"c","req_id":"","op":"subscribe"}',
     "subscribe: error:handler not found,topic:orderbook.50.NOPEUSDT"),
    (BybitLinear(), '{"success":true,"ret_msg":"subscribe","conn_id":"c","op":"subscribe"}', None),
    (BybitLinear(), '{"success":true,"ret_msg":"pong","conn_id":"c","op":"ping"}', None),
    (BybitLinear(), '{"op":"pong","args":["1675418560633"],"conn_id":"c"}', None),
    (Okx(), '{"event":"error","code":"60018","msg":"Wrong URL or channel:books,instId:NOPE-USDT doesn\'t exist",'
            '"connId":"a"}', "60018 Wrong URL or channel:books,instId:NOPE-USDT doesn't exist"),
    (Okx(), '{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a"}', None),
    (Hyperliquid(), '{"channel":"error","data":"Invalid subscription {\\"type\\":\\"l2Book\\",\\"coin\\":\\"NOPE\\"}"}',
     'Invalid subscription {"type":"l2Book","coin":"NOPE"}'),
    (Hyperliquid(), '{"channel":"subscriptionResponse","data":{"method":"subscribe"}}', None),
]


@pytest.mark.parametrize(("adapter", "frame", "said"), CASES, ids=lambda x: getattr(x, "venue", None))
def test_a_refusal_is_told_from_acks_and_pongs(adapter: VenueAdapter, frame: str, said: str | None) -> None:
    msg: Any = orjson.loads(frame)
    assert adapter.route(msg) is None  # a control frame either way: never data
    assert adapter.refusal(msg) == said


@pytest.mark.parametrize(("adapter", "said", "stream"), [
    (Okx(), "60018 Wrong URL or channel:books,instId:NOPE-USDT-SWAP doesn't exist. Please use the correct URL",
     "books:NOPE-USDT-SWAP"),
    (Okx(), "60018 Wrong URL or channel:liquidation-orders,instType:NOPE doesn't exist", "liquidation-orders:NOPE"),
    (Okx(), "60012 Invalid request: {\"op\": \"subscribe\"}", None),
    (BybitLinear(), "subscribe: error:handler not found,topic:orderbook.50.NOPEUSDT", "orderbook.50.NOPEUSDT"),
    (BybitLinear(), "subscribe: error:too many requests", None),
    (BybitLinear(), "subscribe: error:already subscribed,topic:orderbook.50.BTCUSDT", None),
    (Hyperliquid(), 'Invalid subscription {"type":"l2Book","coin":"NOPE"}', "l2Book:NOPE"),
    (Hyperliquid(), "Invalid subscription {not json", None),
    (BinanceSpot(), "2 Invalid request: invalid stream", None),  # Binance's words name no stream
], ids=lambda x: getattr(x, "venue", None))
def test_the_stream_a_refusal_names(adapter: VenueAdapter, said: str, stream: str | None) -> None:
    assert adapter.refused_stream(said) == stream
