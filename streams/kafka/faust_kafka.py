"""faust on aiokafka with one consumer setting faust does not expose: the fetch wait.

faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``: how long the broker may
hold a fetch request when there is nothing (or not enough) to return. Apache Kafka
answers as soon as any requested partition has data, so the value only matters on idle
topics. The embedded broker holds the whole request for the full wait whenever one of
its partitions is empty, and a worker always fetches some idle partitions (changelogs,
positions, accounts, control topics), so records reached the agent in clumps about once
a second. The worker's app uses this transport, which takes the wait from
:attr:`streams.settings.Settings.fetch_max_wait_ms` (50 ms on the embedded broker,
measured with ``liqmon bench``: pipeline 222k events/s at 1,500 ms, 760k–860k at
20–100 ms. Below about 50 ms that broker spends a whole core answering empty fetches:
the synthetic six hours then replay 6× slower, so 50 ms it is).

The consumer also closes a race in faust's recovery that loses records (faust-streaming
issue #596 describes the family). When recovery ends, faust resumes the stream partitions
with the flow already running, *then* seeks them back to the committed offsets, *then*
resumes flow control, which empties every agent queue. Records fetched after the seek but
before that emptying reach an agent queue and are thrown away, while the consumer's
position has already moved past them: they are never read again (a worker restarted with a
backlog waiting on its partitions lost the tail of it, e.g. a replay's end marker, one
restart in ten). :meth:`_Consumer.perform_seek` stops the flow before the seek and leaves
it to faust's recovery to resume it after the queues are emptied, so nothing is handed to
the agents in that window; records fetched meanwhile are dropped by faust *and* the
partition is sought back to its committed offset, so they are read again.

"Sought back" needs one more step than faust takes: aiokafka's ``seek_to_committed`` seeks
only partitions whose committed offset is above 0. A partition with no commit yet (or one
at 0) kept its position past the dropped records, which were then never read: a worker
started after a crash, with every alert still unacknowledged because the receivers were
down, handed the first alert to its sinks and never the rest. :meth:`_Consumer.seek_to_committed`
sends those partitions back to their first offset (the worker's offset reset is ``earliest``).

The app's table manager starts without faust's fixed one-second pause, which waits for
tables still to be declared: liqmon declares its tables with the app (:class:`PromptTableManager`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import aiokafka
import faust
from aiokafka.errors import IllegalStateError
from faust.tables import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, TransportT

__all__ = ["FAUST_FETCH_MAX_WAIT_MS", "LiqmonApp", "uncommitted_stream_partitions"]

log = logging.getLogger(__name__)

#: faust's own value, kept for production Kafka.
FAUST_FETCH_MAX_WAIT_MS = 1500


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "liqmon_fetch_max_wait_ms", FAUST_FETCH_MAX_WAIT_MS)
        # aiokafka reads this when the consumer starts (it builds its Fetcher then).
        consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer


def uncommitted_stream_partitions(
    committed: Mapping[TP, int | None], changelogs: set[str], offset_reset: str
) -> list[TP]:
    """The partitions aiokafka's ``seek_to_committed`` leaves where they are, and that belong at
    their first offset: a commit at 0, or none when the offset reset is ``earliest``. Changelog
    partitions are faust's recovery's to place."""
    return [
        tp for tp, offset in committed.items()
        if tp.topic not in changelogs and (offset == 0 or (offset is None and offset_reset == "earliest"))
    ]


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every partition to its committed offset, those aiokafka skips included (see
        the module docstring): a partition with no commit, or one at 0, goes to offset 0 (a log
        that starts later answers out of range, and the reset policy takes it to its start)."""
        committed: Mapping[TP, int] = await super().seek_to_committed()
        behind = uncommitted_stream_partitions(
            committed, self.app.tables.changelog_topics, str(self.app.conf.consumer_auto_offset_reset)
        )
        if behind:
            try:
                await self.seek_wait({tp: 0 for tp in behind})
            except IllegalStateError as exc:  # revoked meanwhile: the next assignment starts them over
                log.info("partitions revoked during the seek back: %s", exc)
        return committed

    async def perform_seek(self) -> None:
        """Seek to the committed offsets with the flow stopped (see the module docstring).

        With the flow stopped, a fetch that completes during the seek is not handed to the
        agents: faust's ``getmany`` drops it and seeks back to the committed offsets itself.
        The flow stays stopped on return: faust calls this with the flow running only at the
        end of a recovery, and there it empties the agent queues and then resumes the flow
        itself, so no record reaches a queue that is about to be emptied. (Resuming here
        would reopen the window: the caller awaits this in a task and the fetcher may run
        before the caller does.) If the seek fails, the flow is restored for whoever retries.
        """
        was_active = self.flow_active
        if was_active:
            self.stop_flow()
        try:
            await super().perform_seek()
        except BaseException:
            if was_active:
                self.resume_flow()
            raise


class _Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[Any] = _Consumer


class PromptTableManager(TableManager):
    """faust's table manager, started without its one-second pause.

    faust's ``on_start`` sleeps a second before it subscribes the tables' changelogs, so
    that tables an agent declares as it starts are there. Every table of liqmon's is
    declared before the app starts (:func:`streams.app.faust_app.create_app`), so the pause
    only delays the group join of every worker start and restart (measured: 1.0 s of a
    replay's 4 s start). Its only ``sleep`` is that pause.
    """

    async def sleep(self, n: Any, *, loop: Any = None) -> None:
        await asyncio.sleep(0)


class LiqmonApp(faust.App):
    """A faust app whose Kafka consumer uses ``fetch_max_wait_ms`` (default: faust's), and
    whose table manager starts without a pause (:class:`PromptTableManager`)."""

    liqmon_fetch_max_wait_ms: int = FAUST_FETCH_MAX_WAIT_MS

    def __init__(self, id: str, *, fetch_max_wait_ms: int = FAUST_FETCH_MAX_WAIT_MS,
                 **options: Any) -> None:
        self.liqmon_fetch_max_wait_ms = fetch_max_wait_ms
        options.setdefault("TableManager", PromptTableManager)
        super().__init__(id, **options)

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)
