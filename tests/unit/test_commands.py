"""Commands to the global stage: validation, the spiral on the live state, the reply."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from monitor.config import EngineConfig
from monitor.protocol import (
    CommandError,
    CommandRecord,
    CommandReply,
    InputRecord,
    SignalRecord,
    SpiralRequest,
    decode_command,
    decode_reply,
    decode_risk_record,
    encode,
)
from monitor.stages.global_risk.account_shard import AccountShard
from monitor.stages.global_risk.risk import GlobalRisk
from monitor.stages.global_risk.sharded import ShardedRisk
from streams.app.commands import CUSTOM_SHOCK, MAX_REPLY_BYTES, encode_reply, run_spiral_command

T0 = 1_760_130_000_000


def live_risk() -> GlobalRisk:
    """Accounts on USDe@binance and on the USDe index, loops on the USDT key, live prices."""
    risk = GlobalRisk(EngineConfig(), partitions=1)
    for i, key in enumerate(("USDe@binance", "USDe@binance", "USDe")):
        risk.upsert_account({
            "account_id": f"acct-{i}", "venue": "binance", "model": "binance-pm",
            "balances": [{"asset": "USDe", "amount": 1_000_000.0, "price_key": key},
                         {"asset": "USDT", "amount": -700_000.0, "price_key": "USDT"}],
        })
    risk.upsert_position({
        "position_id": "loop-1", "protocol": "aave-v3", "e_mode": "usde-stablecoin",
        "collateral": [{"asset": "USDe", "amount": 368_928.0, "liquidation_threshold": 0.93,
                        "price_key": "USDT"}],
        "debt": [{"asset": "USDT", "amount": 368_928.0 * 0.72, "price_key": "USDT"}],
    })
    sigs = [[T0, "USDe", 1, "price", {"key": "USDe@binance", "price": 1.0}],
            [T0, "USDe", 2, "price", {"key": "USDe", "price": 0.999}],
            [T0, "BTC", 3, "price", {"key": "BTC", "price": 110_000.0}]]
    risk.push(SignalRecord(0, T0 + 1, sigs))
    risk.flush()
    return risk


def request(**fields: Any) -> dict[str, Any]:
    return {"v": 1, "command": "spiral", "request_id": "r1", **fields}


def run(risk: GlobalRisk, record: dict[str, Any]) -> dict[str, Any]:
    """The reply as the client reads it off control.acks."""
    reply: dict[str, Any] = orjson.loads(encode_reply(run_spiral_command(risk, decode_command(record))))
    return reply


def test_standard_shocks_run_on_the_live_state_and_feed_the_gauges() -> None:
    risk = live_risk()
    reply = run(risk, request())
    assert reply["ok"] and reply["request_id"] == "r1"
    assert (reply["accounts"], reply["positions"], reply["state_ts_ms"]) == (3, 1, T0)
    results = reply["results"]
    # ETH and SOL have no live price: those shocks are skipped and say why
    assert reply["skipped"] == {"eth-minus-10pct": ["ETH"], "macro-minus-20pct": ["ETH", "SOL"]}
    assert set(results) == {"usde-binance-local-depeg", "usde-depeg-5pct", "btc-minus-10pct"}
    local = results["usde-binance-local-depeg"]
    assert local["moves"] == {"USDe@binance": -0.35}
    assert local["accounts_liquidated"] == ["acct-0", "acct-1"]  # not the index-priced one
    assert local["positions_liquidated"] == []  # loops priced with the USDT key
    assert local["liquidated_usd"] == pytest.approx(math.fsum(local["liquidated_usd_by_stage"].values()))
    assert local["liquidated_usd"] > 0
    assert results["btc-minus-10pct"]["liquidated_usd"] == 0.0
    # the gauges' source is the standard shocks' latest run
    assert risk.spiral_liquidated_usd() == pytest.approx(
        {name: r["liquidated_usd"] for name, r in results.items()})
    # only keys that moved are listed: no books here, so forced sells are unrouted and only
    # the shocked key moves
    assert local["final_prices"] == {"USDe@binance": pytest.approx(0.65)}
    assert local["price_change_pct"] == {"USDe@binance": pytest.approx(-35.0)}
    assert local["unrouted_sells_usd"]


def test_a_custom_shock_is_reported_but_kept_out_of_the_gauges() -> None:
    risk = live_risk()
    reply = run(risk, request(shocks={"USDe": -0.5}))
    assert list(reply["results"]) == [CUSTOM_SHOCK] and reply["skipped"] == {}
    assert reply["results"][CUSTOM_SHOCK]["accounts_liquidated"] == ["acct-2"]
    assert risk.spiral_liquidated_usd() == {}
    with pytest.raises(CommandError, match="no live price for ETH") as err:
        run_spiral_command(risk, decode_command(request(shocks={"ETH": -0.1, "BTC": -0.1})))
    assert err.value.request_id == "r1"


@pytest.mark.parametrize(("record", "field", "request_id"), [
    ({"v": 1, "command": "spiral"}, "request_id", None),
    (request(command="liquidate-everything"), "command", "r1"),
    (request(shocks={"BTC": -1.0}), "shocks.BTC", "r1"),
    (request(shocks={"BTC": 1e306}), "shocks.BTC", "r1"),  # past +1e8 %: the shocked price overflows
    (request(shocks={"BTC": "-0.1"}), "shocks[...]", "r1"),
    (request(shocks={"BTC": -0.1, "": -0.1}), "shocks", "r1"),
    (request(shocks={}), "shocks", "r1"),
    (request(extra=1), "extra", "r1"),
    (request(v=2), "v", "r1"),
    ({"v": 1, "command": "spiral", "request_id": 7}, "request_id", None),
])
def test_bad_commands_name_the_field(record: dict[str, Any], field: str, request_id: str | None) -> None:
    assert isinstance(decode_risk_record(orjson.dumps(record)), CommandRecord)
    with pytest.raises(CommandError) as err:
        decode_command(record)
    assert err.value.detail.startswith(f"{field}:")
    assert err.value.request_id == request_id


def test_request_round_trip_and_signal_records_are_not_commands() -> None:
    req = SpiralRequest(v=1, request_id="abc", shocks={"USDe@binance": -0.35})
    assert decode_command(orjson.loads(encode(req))) == req
    assert isinstance(decode_risk_record(encode(req)), CommandRecord)
    assert b"shocks" not in encode(SpiralRequest(v=1, request_id="abc"))
    assert isinstance(decode_risk_record(b'{"v": 1, "p": 0, "wm": 0, "s": []}'), SignalRecord)
    assert isinstance(decode_risk_record(b'{"v": 1, "input": "account", "raw": {}}'), InputRecord)


def test_an_oversize_reply_becomes_an_error_reply() -> None:
    reply = CommandReply(request_id="r1", ok=True, results={"x": {"y": "z" * MAX_REPLY_BYTES}})
    out = decode_reply(encode_reply(reply))
    assert out.request_id == "r1" and out.ok is False and out.error is not None and "exceeds" in out.error
    small = CommandReply(request_id="r1", ok=True)
    assert orjson.loads(encode_reply(small)) == {"request_id": "r1", "ok": True}


def _loaded(stage: GlobalRisk | ShardedRisk) -> GlobalRisk:
    """Three leveraged USDe accounts, priced: the aggregation stage when sharded."""
    for i in range(3):
        stage.upsert_account({
            "account_id": f"acct-{i}", "venue": "binance", "model": "binance-pm",
            "balances": [{"asset": "USDe", "amount": 1_000_000.0, "price_key": "USDe@binance"},
                         {"asset": "USDT", "amount": -700_000.0, "price_key": "USDT"}],
        })
    stage.push(SignalRecord(0, T0 + 1, [[T0, "USDe", 1, "price", {"key": "USDe@binance", "price": 1.0}]]))
    stage.flush()
    return stage.risk if isinstance(stage, ShardedRisk) else stage


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_with_account_shards_the_spiral_covers_every_account(shards: int) -> None:
    """The aggregation stage's copy of the accounts: the spiral of one global stage."""
    want = run(_loaded(GlobalRisk(EngineConfig(), 1)), request(shocks={"USDe@binance": -0.35}))
    got = run(_loaded(ShardedRisk(EngineConfig(), 1, shards)), request(shocks={"USDe@binance": -0.35}))
    assert got["ok"] and got["accounts"] == 3 and "accounts_left_out" not in got
    assert got["results"] == want["results"]
    assert len(got["results"][CUSTOM_SHOCK]["accounts_liquidated"]) == 3


def test_without_the_copy_the_reply_names_the_accounts_left_out() -> None:
    """``spiral_run.copy_sharded_accounts`` false: the spiral covers the loop positions only
    when the accounts are sharded, and says so."""
    config = EngineConfig.model_validate({"spiral_run": {"copy_sharded_accounts": False}})
    reply = run(_loaded(ShardedRisk(config, 1, 2)), request(shocks={"USDe@binance": -0.35}))
    assert reply["ok"] and reply["accounts"] == 0 and reply["accounts_left_out"] == 3
    assert reply["results"][CUSTOM_SHOCK]["accounts_liquidated"] == []
    assert "accounts_left_out" not in run(live_risk(), request())  # one stage: every account is in


def test_a_position_with_an_unknown_e_mode_is_refused_and_the_state_goes_on() -> None:
    """Found by a fuzz of `liqmon replay --positions`: a position whose e-mode the config does
    not know was stored, and every loop evaluation after it raised (its rates unknown): the
    replay ended in a traceback, and a worker would have dead-lettered every signal batch
    after it. Now the record is refused by name, nothing is stored, and the stage goes on;
    an account shard registers nothing for it either."""
    risk = live_risk()
    bad = {"position_id": "loop-x", "protocol": "aave-v3", "e_mode": "ééé",
           "collateral": [{"asset": "USDe", "amount": 1.0, "liquidation_threshold": 0.9, "price_key": "USDT"}]}
    with pytest.raises(ValidationError) as err:
        risk.upsert_position(bad)
    (error,) = err.value.errors()
    assert error["loc"] == ("e_mode",)
    assert error["msg"] == "unknown e-mode 'ééé' (known: susde-stablecoins, usde-stablecoin)"
    assert "loop-x" not in risk.loops.positions
    risk.push(SignalRecord(0, T0 + 2, [[T0 + 2, "USDe", 9, "price", {"key": "USDT", "price": 0.999}]]))
    risk.flush()
    assert run(risk, request())["ok"]
    derived = [{**bad["collateral"][0], "price_key": "rate:sUSDe/USDe*USDe"}]
    shard = AccountShard(EngineConfig(), 1, 0, 1)
    shard.upsert_position({**bad, "collateral": derived})
    assert not shard.price_book.pending_keys
    shard.upsert_position({**bad, "collateral": derived, "e_mode": "usde-stablecoin"})  # a known one registers
    assert shard.price_book.pending_keys == {"rate:sUSDe/USDe*USDe"}
