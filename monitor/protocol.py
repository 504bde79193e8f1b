"""Every record that travels between liqmon's processes: one typed record per topic, one codec.

The topics (``streams.topics``) and what they carry:

================  ==========================================================================
topic             record
================  ==========================================================================
market.batches    :class:`MarketRecord`: one asset's events in columns, a tick, or a run's
                  end marker (:mod:`monitor.ingest.batch` turns it into numpy columns)
risk.signals      :class:`SignalRecord` (stage 1's signals, one ``TypedDict`` payload per
                  kind), :class:`InputRecord` (a forwarded position or account, or a
                  replay's :class:`SyncMarker`), :class:`CommandRecord` (a
                  :class:`SpiralRequest`); told apart by :func:`decode_risk_record`;
                  forwarded inputs also travel many to a record (:func:`bundle_inputs`,
                  split again by :func:`split_input_bundle`)
control.acks      :class:`MarketAck`, :class:`GlobalAck`, :class:`LoadedAck` (tagged by
                  ``stage``), gathered by :class:`AckCollector`; and :class:`CommandReply`
alerts.cascade    :class:`Alert`
risk.snapshots    :class:`RiskSnapshot`
deadletter        :class:`DeadLetter`
================  ==========================================================================

The codec is msgspec's JSON: every record is a ``msgspec.Struct``, written by
:func:`encode` and read by a decoder typed for its topic, which validates while it parses
(a wrong type, a missing field or a negative count is a :class:`RecordError` naming the
field). Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

import msgspec
from msgspec import Meta, Struct, field

from monitor.limits import SHOCK_RANGE, shock_move_allowed

__all__ = [
    "COMMAND_VERSION",
    "INPUT_BUNDLE_MAX_BYTES",
    "MARKET_VERSION",
    "NO_COLUMN",
    "SIGNAL_FIELDS",
    "SIGNAL_VERSION",
    "AccountHead",
    "Ack",
    "AckCollector",
    "Alert",
    "BookSignal",
    "CommandError",
    "CommandRecord",
    "CommandReply",
    "DeadLetter",
    "DepthSignal",
    "FlowSignal",
    "GlobalAck",
    "InputBundle",
    "InputKind",
    "InputRecord",
    "LiqSignal",
    "LoadedAck",
    "MarketAck",
    "MarketHead",
    "MarketRecord",
    "MarketWire",
    "PegSignal",
    "PriceSignal",
    "RecordError",
    "RiskSnapshot",
    "Severity",
    "Signal",
    "SignalKind",
    "SignalPayload",
    "SignalRecord",
    "SpiralRequest",
    "SyncMarker",
    "bundle_inputs",
    "decode_account_head",
    "decode_ack",
    "decode_command",
    "decode_market",
    "decode_reply",
    "decode_risk_record",
    "encode",
    "encode_pretty",
    "split_input_bundle",
]

MARKET_VERSION = 2
SIGNAL_VERSION = 1
INPUT_VERSION = 1

_NonNegative = Annotated[int, Meta(ge=0)]


class RecordError(ValueError):
    """A record that is not what its topic carries: ``reason`` labels it for the dead letters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_ENCODER = msgspec.json.Encoder()
_ANY = msgspec.json.Decoder()


def encode(record: Struct) -> bytes:
    """A record's bytes on its topic (the same record always gives the same bytes)."""
    return _ENCODER.encode(record)


def encode_pretty(record: Struct) -> bytes:
    """A record's bytes indented for a person (``liqmon spiral`` prints its reply so)."""
    return msgspec.json.format(encode(record), indent=2)


def _decode(decoder: msgspec.json.Decoder[Any], value: bytes, what: str) -> Any:
    try:
        return decoder.decode(value)
    except msgspec.ValidationError as exc:
        raise RecordError(f"invalid_{what}", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise RecordError("invalid_json", str(exc)) from None


def _convert(obj: object, kind: type[Any], what: str) -> Any:
    try:
        return msgspec.convert(obj, kind)
    except msgspec.ValidationError as exc:
        raise RecordError(f"invalid_{what}", str(exc)) from None


# --- market.batches -------------------------------------------------------------------------


class MarketHead(Struct, omit_defaults=True, forbid_unknown_fields=True):
    """The fields of a ``market.batches`` record other than its six columns."""

    v: int
    asset: str | None = None
    src: list[tuple[str, str, str]] | None = None
    tick: int | None = None
    ctl: str | None = None
    run: str | None = None
    partition: int | None = None


class MarketRecord(MarketHead):
    """One ``market.batches`` record, in one of three forms (the others' fields left out):

    - a batch: ``asset``, ``src`` (the (venue, symbol, quote) table) and the columns ``k``
      (kind), ``i`` (source index), ``t`` (ts_ms), ``r`` (recv_ts_ms), ``f`` (four numbers
      per event) and ``x`` (the band depths of each book event);
    - a tick: ``tick``, event time on every stream has reached it;
    - an end marker: ``ctl`` ("end"), ``run`` and ``partition``.

    Written with :func:`encode` (the columns after the other fields); read as a
    :class:`MarketWire`.
    """

    k: list[int] | None = None
    i: list[int] | None = None
    t: list[int] | None = None
    r: list[int] | None = None
    f: list[float] | None = None
    x: list[float] | None = None


#: A column absent from a record (``MarketWire``'s default: no bytes).
NO_COLUMN = msgspec.Raw()


class MarketWire(MarketHead):
    """A ``market.batches`` record as read: the fields of :class:`MarketRecord`, its columns
    kept as their JSON text (syntax checked by the parse, :data:`NO_COLUMN` when absent),
    which :func:`monitor.ingest.batch.decode_record` reads straight into arrays."""

    k: msgspec.Raw = NO_COLUMN
    i: msgspec.Raw = NO_COLUMN
    t: msgspec.Raw = NO_COLUMN
    r: msgspec.Raw = NO_COLUMN
    f: msgspec.Raw = NO_COLUMN
    x: msgspec.Raw = NO_COLUMN


_MARKET = msgspec.json.Decoder(MarketWire)


def decode_market(value: bytes) -> MarketWire:
    """A ``market.batches`` record, its fields other than the columns typed (raises
    :class:`RecordError`)."""
    rec: MarketWire = _decode(_MARKET, value, "batch")
    if rec.v != MARKET_VERSION:
        raise RecordError("invalid_batch", "not a liqmon batch record (missing or unknown 'v')")
    if rec.ctl is not None:
        if rec.run is None or rec.partition is None:
            raise RecordError("invalid_batch", "control record needs ctl, run, partition")
    elif rec.tick is None and (rec.asset is None or rec.src is None):
        raise RecordError("invalid_batch", "batch needs 'asset' and 'src'")
    return rec


# --- risk.signals ---------------------------------------------------------------------------

SignalKind = Literal["price", "peg", "book", "depth", "liq", "flow"]


class PriceSignal(TypedDict):
    """A price key moved materially (an index, a venue's price, a derived rate)."""

    key: str
    price: float


class PegSignal(TypedDict):
    """A venue's peg level changed (0 in band … 3 critical) at this deviation."""

    venue: str
    level: int
    dev_bps: float


class BookSignal(TypedDict):
    """A book changed withdrawal state (warm, withdrawn, restored, invalid …)."""

    venue: str
    symbol: str
    state: str
    depth_usd: float
    baseline_usd: float


class DepthSignal(TypedDict):
    """A book's cumulative bid depth (USD) in the bands below mid, for the spiral's ladders."""

    venue: str
    symbol: str
    key: str
    mid: float
    bid_usd: list[float]


class LiqSignal(TypedDict):
    """Liquidation prints of the batch, by side."""

    long_usd: float
    short_usd: float


class FlowSignal(TypedDict):
    """Net taker sell flow of the batch."""

    net_sell_usd: float


SignalPayload = PriceSignal | PegSignal | BookSignal | DepthSignal | LiqSignal | FlowSignal

#: ``(ts_ms, asset, seq, kind, payload)``: the payload's fields are fixed by the kind.
Signal = tuple[int, str, int, str, Any]

#: The fields each kind of signal carries: what stage 2 reads, checked when a record is decoded.
SIGNAL_FIELDS: dict[str, frozenset[str]] = {
    kind: frozenset(payload.__annotations__)
    for kind, payload in (
        ("price", PriceSignal), ("peg", PegSignal), ("book", BookSignal),
        ("depth", DepthSignal), ("liq", LiqSignal), ("flow", FlowSignal),
    )
}


class SignalRecord(Struct, tag_field="v", tag=SIGNAL_VERSION, omit_defaults=True, frozen=True):
    """One ``risk.signals`` record from stage 1: a partition's signals after a batch and its
    watermark. ``end`` (a run id) marks the end of a replay on that partition."""

    partition: int = field(name="p")
    watermark_ms: int = field(name="wm")
    signals: list[tuple[int, str, int, str, dict[str, Any]]] = field(name="s")
    end: str | None = None

    def check_payloads(self) -> SignalRecord:
        """The record itself, once every signal's payload has its kind's fields."""
        for _ts, _asset, _seq, kind, payload in self.signals:
            fields = SIGNAL_FIELDS.get(kind)
            if fields is None:
                raise RecordError("invalid_signal", f"unknown signal kind {kind!r}")
            if not fields <= payload.keys():
                missing = ", ".join(sorted(fields - payload.keys()))
                raise RecordError("invalid_signal", f"a {kind} signal needs {missing}")
        return self


InputKind = Literal["position", "account"]


class SyncMarker(Struct, tag_field="ctl", tag="sync", frozen=True):
    """A replay's marker on one positions/accounts partition: everything before it is sent.

    The global stage acknowledges the run (:class:`LoadedAck`) once all ``of`` markers are in.
    """

    run: str
    partition: Annotated[int, Meta(ge=0)] = 0
    of: Annotated[int, Meta(ge=1)] = 1

    def raw(self) -> dict[str, Any]:
        """The marker as written to the positions/accounts topic (its JSON object)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> SyncMarker:
        """Read a marker (raises :class:`RecordError` naming what is wrong)."""
        try:
            return msgspec.convert(raw, cls)
        except msgspec.ValidationError as exc:
            raise RecordError("invalid_sync_marker", f"a sync marker needs a string run, an integer "
                              f"partition and of >= 1 ({exc})") from None


class InputRecord(Struct, tag_field="v", tag=INPUT_VERSION, omit_defaults=True, frozen=True):
    """A position or account forwarded to ``risk.signals`` with its source (partition, offset).

    ``src`` is ``None`` for a record written by hand: it is always applied.
    """

    kind: InputKind = field(name="input")
    raw: dict[str, Any]
    src: tuple[int, int] | None = None

    def encode(self) -> bytes:
        return encode(self)

    @property
    def sync(self) -> SyncMarker | None:
        """The replay's sync marker this record carries, if it is one."""
        return SyncMarker.from_raw(self.raw) if "ctl" in self.raw else None


#: A bundle of forwarded inputs stays well under Kafka's default 1 MB record limit.
INPUT_BUNDLE_MAX_BYTES = 256 * 1024

_BUNDLE_HEAD = b'{"inputs":['


class InputBundle(Struct, frozen=True, forbid_unknown_fields=True):
    """Forwarded inputs in one ``risk.signals`` record: each element is one
    :class:`InputRecord`'s bytes, in the order forwarded (kept raw: a reader decodes each
    as it would a record of its own)."""

    inputs: list[msgspec.Raw]


_BUNDLE = msgspec.json.Decoder(InputBundle)


def bundle_inputs(records: list[bytes], max_bytes: int = INPUT_BUNDLE_MAX_BYTES) -> list[bytes]:
    """Encoded :class:`InputRecord` s as few ``risk.signals`` records as keep each under
    ``max_bytes``, in order. A record alone in its group goes as it is."""
    out: list[bytes] = []
    group: list[bytes] = []
    empty = size = len(_BUNDLE_HEAD) + 1  # with each record's comma: the head, and "]}" less a comma
    for record in records:
        if group and size + len(record) + 1 > max_bytes:
            out.append(_bundle(group))
            group, size = [], empty
        group.append(record)
        size += len(record) + 1
    if group:
        out.append(_bundle(group))
    return out


def _bundle(group: list[bytes]) -> bytes:
    return group[0] if len(group) == 1 else _BUNDLE_HEAD + b",".join(group) + b"]}"


def split_input_bundle(value: bytes) -> list[bytes]:
    """The records in a ``risk.signals`` record: a bundle's elements, or the record itself.

    Raises :class:`RecordError` (``invalid_bundle``) for a bundle that does not check out.
    """
    if not value.startswith(_BUNDLE_HEAD):
        return [value]
    bundle: InputBundle = _decode(_BUNDLE, value, "bundle")
    return [bytes(element) for element in bundle.inputs]


class _AccountIdentity(Struct, frozen=True):
    """What a reader needs of an account record that is not its own: the id, whether it is
    a deletion, and whether it is a replay marker (``ctl`` present, even null)."""

    account_id: str
    delete: bool = False
    ctl: Any = msgspec.UNSET


class AccountHead(Struct, tag_field="v", tag=INPUT_VERSION, frozen=True):
    """A forwarded account record decoded only as far as :class:`_AccountIdentity` (the
    envelope checked as :class:`InputRecord` checks it), so that an account shard skips the
    accounts of other shards without building their documents."""

    kind: Literal["account"] = field(name="input")
    raw: _AccountIdentity
    src: tuple[int, int] | None = None


_ACCOUNT_HEAD = msgspec.json.Decoder(AccountHead)


def decode_account_head(value: bytes) -> AccountHead | None:
    """The head of a plain account record: None for anything else (a position, a command,
    a replay marker, an id that is not a string, a ``delete`` that is not a boolean, bad
    JSON) — :func:`decode_risk_record` then says what it is."""
    try:
        head = _ACCOUNT_HEAD.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return head if head.raw.ctl is msgspec.UNSET else None


class CommandRecord(Struct, frozen=True):
    """A command to the global stage as it arrived: :func:`decode_command` types it (apart, so
    that a command that does not validate is still answered when it names its request id)."""

    obj: dict[str, Any]


COMMAND_VERSION: Literal[1] = 1


class SpiralRequest(Struct, tag_field="command", tag="spiral", kw_only=True, frozen=True,
                    forbid_unknown_fields=True, omit_defaults=True):
    """``{"command": "spiral", "v": 1, "request_id", "shocks"?}``: run the spiral on the live state."""

    v: Literal[1]
    request_id: Annotated[str, Meta(min_length=1, max_length=200)]
    #: price key → move ratio (−0.35 = −35 %); None = the configured standard shocks
    shocks: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.shocks is None:
            return
        if not self.shocks:
            raise ValueError("shocks: must name at least one price key (or be null)")
        for key, move in self.shocks.items():
            if not key:
                raise ValueError("shocks: empty price key")
            if not shock_move_allowed(move):
                raise ValueError(f"shocks.{key}: {SHOCK_RANGE}")


class CommandError(ValueError):
    """A command that cannot be run: ``detail`` starts with the field, ``request_id`` when known."""

    def __init__(self, detail: str, request_id: str | None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.request_id = request_id


def _field_and_message(exc: msgspec.ValidationError) -> str:
    """msgspec's message as ``field: what is wrong`` (``record`` when no field is named)."""
    text = str(exc)
    if " - at `$." in text:
        message, _, where = text.partition(" - at `$.")
        return f"{where.rstrip('`')}: {message}"
    for marker in ("missing required field `", "unknown field `"):
        if marker in text:
            return f"{text.split(marker, 1)[1].split('`', 1)[0]}: {text}"
    head = text.split(":", 1)[0]
    return text if head and " " not in head else f"record: {text}"


def decode_command(obj: dict[str, Any]) -> SpiralRequest:
    """The command a :class:`CommandRecord` carries (raises :class:`CommandError` naming the field)."""
    rid = obj.get("request_id")
    request_id = rid if isinstance(rid, str) and 0 < len(rid) <= 200 else None
    try:
        return msgspec.convert(obj, SpiralRequest)
    except msgspec.ValidationError as exc:
        raise CommandError(_field_and_message(exc), request_id) from None


class CommandReply(Struct, kw_only=True, omit_defaults=True):
    """A command's answer on ``control.acks`` (key: request id): ``ok`` with the results, or
    ``ok: false`` with the error."""

    request_id: str
    command: str | None = None
    ok: bool
    error: str | None = None
    config_hash: str | None = None
    #: Event time of the live state the command ran on.
    state_ts_ms: int | None = None
    positions: int | None = None
    accounts: int | None = None
    price_keys: int | None = None
    results: dict[str, dict[str, Any]] | None = None
    #: Standard shocks left out, and the price keys they lack.
    skipped: dict[str, list[str]] | None = None
    #: Whether the standard shocks ran again or were reused, and why (the spiral gate).
    spiral_run: dict[str, Any] | None = None
    #: Unified accounts the spiral left out: held by account shards (README "Account shards").
    accounts_left_out: int | None = None


_REPLY = msgspec.json.Decoder(CommandReply)


def decode_reply(value: bytes) -> CommandReply:
    """A command reply from its bytes (raises :class:`RecordError`)."""
    reply: CommandReply = _decode(_REPLY, value, "reply")
    return reply


def decode_risk_record(value: bytes) -> SignalRecord | InputRecord | CommandRecord:
    """One ``risk.signals`` record, typed (raises :class:`RecordError` naming what is wrong)."""
    obj = _decode(_ANY, value, "signal")
    if isinstance(obj, dict) and "input" in obj:
        record: InputRecord = _convert(obj, InputRecord, "input")
        return record
    if isinstance(obj, dict) and "command" in obj:
        return CommandRecord(obj)
    if not isinstance(obj, dict) or obj.get("v") != SIGNAL_VERSION:
        raise RecordError("invalid_signal", "not a liqmon signal record")
    signals: SignalRecord = _convert(obj, SignalRecord, "signal")
    return signals.check_payloads()


# --- control.acks ---------------------------------------------------------------------------


class _AckBase(Struct, tag_field="stage", kw_only=True, frozen=True, forbid_unknown_fields=True):
    run: str
    config_hash: str
    #: Alerts the acknowledging stage emitted for the run (a collector waits to read them all).
    alerts: _NonNegative


class MarketAck(_AckBase, tag="market", frozen=True):
    """A market partition reached the run's end marker."""

    partition: _NonNegative
    deadletters: _NonNegative
    events: _NonNegative
    ack_wall_s: float
    #: Wall-clock seconds of the partition's first record of the run (benchmarks' span).
    first_wall_s: float | None = None


class GlobalAck(_AckBase, tag="global", frozen=True):
    """The global stage finished the run."""

    snapshots: _NonNegative
    ack_wall_s: float


class LoadedAck(_AckBase, tag="loaded", frozen=True):
    """The global stage holds the run's positions and accounts."""

    positions: _NonNegative
    accounts: _NonNegative


Ack = MarketAck | GlobalAck | LoadedAck
_ACK = msgspec.json.Decoder(Ack)


def decode_ack(value: bytes) -> Ack | None:
    """The ack in a record, or ``None`` for anything else on the topic (a command reply)."""
    try:
        ack: Ack = _ACK.decode(value)
    except msgspec.DecodeError:
        return None
    return ack


class AckCollector:
    """The acks of one run, as they arrive: by partition, the global stage's, loaded."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.market: dict[int, MarketAck] = {}
        self.global_acks: list[GlobalAck] = []
        self.loaded: LoadedAck | None = None

    def take(self, value: bytes) -> None:
        """Keep the record if it is an ack of this run; a re-sent ack replaces its partition's."""
        ack = decode_ack(value)
        if ack is None or ack.run != self.run_id:
            return
        if isinstance(ack, MarketAck):
            self.market[ack.partition] = ack
        elif isinstance(ack, GlobalAck):
            self.global_acks.append(ack)
        else:
            self.loaded = ack

    def ended(self, n_parts: int, *, global_stage: bool = True) -> bool:
        """Every market partition acknowledged the end (and the global stage, if asked)."""
        return len(self.market) >= n_parts and (bool(self.global_acks) or not global_stage)

    def announced_alerts(self) -> int:
        """Alerts the acks say were emitted: the collector's reader waits until it has them."""
        return sum(a.alerts for a in self.market.values()) + sum(a.alerts for a in self.global_acks)

    def announced_snapshots(self) -> int:
        return sum(a.snapshots for a in self.global_acks)

    def in_order(self) -> list[MarketAck]:
        """The market acks by partition."""
        return [self.market[p] for p in sorted(self.market)]

    def count(self) -> int:
        """How many acks arrived (progress for an idle clock)."""
        return len(self.market) + len(self.global_acks)


# --- alerts.cascade, risk.snapshots, deadletter -----------------------------------------------

Severity = Literal["info", "warning", "high", "critical"]


class Alert(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One alert (README "Alert"); ``alert_id`` is a pure function of config, kind, subject and
    transition (``monitor.alerts.make_alert``)."""

    alert_id: str
    ts_ms: int
    kind: str
    severity: Severity
    venue: str | None
    asset: str | None
    stage: int | None
    message: str
    evidence: dict[str, Any]
    config_hash: str

    def to_json(self) -> bytes:
        """Canonical bytes: the same alert always serialises identically."""
        return encode(self)

    def as_dict(self) -> dict[str, Any]:
        """The alert as its JSON object (what the sinks post)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    @classmethod
    def from_obj(cls, obj: object) -> Alert:
        """An alert from its decoded JSON (raises :class:`RecordError` naming the field)."""
        alert: Alert = _convert(obj, cls, "alert")
        return alert

    @classmethod
    def from_json(cls, value: bytes) -> Alert:
        """An alert from its bytes on ``alerts.cascade`` (raises :class:`RecordError`)."""
        alert: Alert = _decode(_ALERT, value, "alert")
        return alert


_ALERT = msgspec.json.Decoder(Alert)


class RiskSnapshot(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The global stage's figures at ``ts_ms`` (the event time that was just evaluated)."""

    ts_ms: int
    #: Loop positions per health-factor band (``monitor.stages.global_risk.loop_watch.HF_BANDS``),
    #: all protocols.
    hf_bands: dict[str, int] = field(default_factory=dict)
    #: Loop collateral (USD) that becomes liquidatable after a further drop of N % of its
    #: driving price (key: N as text, e.g. "5"), summed over assets and protocols.
    ladder_usd: dict[str, float] = field(default_factory=dict)
    #: Loop positions with HF < 1 and their collateral, USD.
    loops_liquidatable: int = 0
    loops_liquidatable_usd: float = 0.0
    #: Unified accounts per status (normal, margin_call, reduce_only, liquidation).
    accounts_by_status: dict[str, int] = field(default_factory=dict)
    #: USD the liquidation engines were estimated to sell per asset since the run began
    #: (the forced-sell lists of the accounts that reached liquidation).
    forced_sell_usd_by_asset: dict[str, float] = field(default_factory=dict)
    #: Latest spiral estimate per standard shock: notional liquidated, USD.
    spiral_usd_by_shock: dict[str, float] = field(default_factory=dict)
    #: Highest active cascade stage (0 = none) and the active stages.
    stage: int = 0
    active_stages: tuple[int, ...] = ()
    #: Share of monitored books with their bids withdrawn.
    withdrawn_ratio: float = 0.0

    def encode(self) -> bytes:
        """The record's bytes (the ``risk.snapshots`` topic value)."""
        return encode(self)

    @classmethod
    def decode(cls, value: bytes) -> RiskSnapshot:
        """A record from its bytes (raises :class:`RecordError` on a bad one)."""
        snapshot: RiskSnapshot = _decode(_SNAPSHOT, value, "snapshot")
        return snapshot


_SNAPSHOT = msgspec.json.Decoder(RiskSnapshot)


class DeadLetter(Struct, frozen=True):
    """A record that failed validation: reason label, detail, and the raw bytes (base64)."""

    reason: str
    detail: str
    raw: bytes = field(name="raw_b64")
    venue: str | None = None
    channel: str | None = None
    ts_ms: int | None = None
    line_no: int | None = field(default=None, name="line")

    def encode(self) -> bytes:
        return encode(self)
