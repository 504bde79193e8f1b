"""The liquidity vacuum: bids withdrawn on a large enough share of the monitored books.

Stage 1 reports each book's state (warm, withdrawn, restored, invalid); the global stage
counts them and raises ``liquidity_vacuum`` while at least ``vacuum_min_books`` books are
monitored and ``vacuum_share_ratio`` of them are withdrawn (RISK_MODEL §4).
"""

from __future__ import annotations

from monitor.alerts import make_alert
from monitor.config import LiquidityConfig
from monitor.protocol import Alert, BookSignal

__all__ = ["VacuumWatch"]


class VacuumWatch:
    """Monitored and withdrawn books by name (``venue:symbol``); the vacuum alert."""

    def __init__(self, liquidity: LiquidityConfig, config_hash: str) -> None:
        self.liquidity = liquidity
        self.config_hash = config_hash
        self.monitored_books: set[str] = set()
        self.withdrawn_books: set[str] = set()
        self.vacuum_active = False

    def withdrawn_ratio(self) -> float:
        """Share of the monitored books whose bids are withdrawn (0 with none monitored)."""
        n_books = len(self.monitored_books)
        return len(self.withdrawn_books) / n_books if n_books else 0.0

    def on_book(self, ts: int, p: BookSignal, out: list[Alert]) -> tuple[bool, list[str], float]:
        """Apply one book state; append the vacuum's alert when it starts or ends.

        Returns (vacuum active, withdrawn books sorted, withdrawn share) for the cascade.
        """
        name = f"{p['venue']}:{p['symbol']}"
        state = p["state"]
        if state == "warm":
            self.monitored_books.add(name)
        elif state == "withdrawn":
            self.monitored_books.add(name)
            self.withdrawn_books.add(name)
        elif state == "restored":
            self.withdrawn_books.discard(name)
        elif state == "invalid":
            self.monitored_books.discard(name)
            self.withdrawn_books.discard(name)
        lq = self.liquidity
        n = len(self.monitored_books)
        share = len(self.withdrawn_books) / n if n else 0.0
        active = n >= lq.vacuum_min_books and share >= lq.vacuum_share_ratio
        books = sorted(self.withdrawn_books)
        if active != self.vacuum_active:
            self.vacuum_active = active
            out.append(make_alert(
                kind="liquidity_vacuum",
                ts_ms=ts,
                severity="critical" if active else "info",
                venue=None,
                asset=None,
                message=(
                    f"liquidity vacuum: bids withdrawn on {len(books)} of {n} monitored books"
                    if active else f"liquidity vacuum over: {len(books)} of {n} books withdrawn"
                ),
                evidence={"withdrawn_books": books, "monitored_books": n,
                          "withdrawn_ratio": round(share, 4)},
                config_hash=self.config_hash,
                identity="on" if active else "off",
            ))
        return active, books, share
