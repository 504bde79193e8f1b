"""Kafka security for every client liqmon makes, from the ``LIQMON_KAFKA_*`` settings.

One place turns the settings into client options: :func:`kafka_client_options` for the
aiokafka producers, consumers and admin clients (replay, live, spiral, benches, topic
creation) and :func:`faust_security` for the faust app (its producer, consumer and admin
clients). ``PLAINTEXT`` (the default) adds nothing.

- ``SSL``: TLS with the CA in ``LIQMON_KAFKA_SSL_CAFILE`` (the system CAs when unset), the
  broker's host name verified, and a client certificate when ``_CERTFILE``/``_KEYFILE`` are set.
- ``SASL_PLAINTEXT`` / ``SASL_SSL``: ``LIQMON_KAFKA_SASL_MECHANISM`` (PLAIN, SCRAM-SHA-256,
  SCRAM-SHA-512) with ``_USERNAME`` and ``_PASSWORD``; the password is a ``SecretStr`` that
  is unwrapped only here, into the client's own options, and never logged.

A broker that cannot be reached with these settings (refused, wrong CA, TLS spoken to a
plaintext port or the reverse) is reported by :func:`start_admin` as one line naming the
settings to check: every liqmon command creates its topics with it before anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streams.settings import ConfigFileError, Settings

__all__ = ["KafkaConnectError", "faust_security", "kafka_client_options", "ssl_context", "start_admin", "topic_exists"]

#: How long the diagnosis of a failed connection may take (one TLS handshake).
_PROBE_TIMEOUT_S = 5.0


class KafkaConnectError(ConfigFileError):
    """Kafka cannot be reached with the configured address and security (one line)."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the SSL and SASL_SSL protocols (None without TLS)."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    cafile = settings.kafka_ssl_cafile
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigFileError(f"LIQMON_KAFKA_SSL_CAFILE: cannot load {cafile}: {exc}") from None
    if settings.kafka_ssl_certfile is not None:
        try:
            context.load_cert_chain(str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigFileError(
                f"LIQMON_KAFKA_SSL_CERTFILE/_KEYFILE: cannot load {settings.kafka_ssl_certfile}: {exc}"
            ) from None
    return context


def kafka_client_options(settings: Settings | None = None) -> dict[str, Any]:
    """aiokafka keyword arguments for the configured security (none for PLAINTEXT)."""
    settings = settings if settings is not None else Settings()
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.get_secret_value() if password is not None else None,
        )
    return options


def faust_security(settings: Settings) -> dict[str, Any]:
    """faust app settings for the configured security (``broker_credentials``)."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    context = ssl_context(settings)
    if protocol == "SSL":
        assert context is not None
        return {"broker_credentials": faust.SSLCredentials(context)}
    password = settings.kafka_sasl_password
    credentials = faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password is not None else None,
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )
    return {"broker_credentials": credentials}


async def start_admin(bootstrap: str, settings: Settings | None = None, **options: Any) -> AIOKafkaAdminClient:
    """A started admin client, or :class:`KafkaConnectError` naming what to check."""
    settings = settings if settings is not None else Settings()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_client_options(settings), **options)
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # its per-attempt errors: the one line below says it all
    try:
        await admin.start()
    except KafkaError:
        with contextlib.suppress(Exception):
            await admin.close()
        reason = await _diagnose(bootstrap, settings)
        raise KafkaConnectError(
            f"cannot connect to Kafka at {bootstrap} over {settings.kafka_security_protocol}: {reason} "
            "(check LIQMON_KAFKA_BOOTSTRAP, LIQMON_KAFKA_SECURITY_PROTOCOL and LIQMON_KAFKA_SSL_CAFILE / _SASL_*)"
        ) from None
    finally:
        client_log.setLevel(level)
    return admin


async def topic_exists(bootstrap: str, topic: str, settings: Settings | None = None) -> bool | None:
    """Whether the broker lists ``topic`` (None: it could not be asked)."""
    try:
        admin = await start_admin(bootstrap, settings, request_timeout_ms=2000)
    except KafkaConnectError:
        return None
    try:
        return topic in await admin.list_topics()
    except KafkaError:
        return None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def _diagnose(bootstrap: str, settings: Settings) -> str:
    """Why the connection failed, from one connection (TLS handshake included) of our own."""
    context = ssl_context(settings)
    host, _, port = bootstrap.split(",", maxsplit=1)[0].rpartition(":")
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=context, server_hostname=host if context else None),
            _PROBE_TIMEOUT_S,
        )
    except ssl.SSLCertVerificationError as exc:
        return f"TLS certificate not trusted ({exc.verify_message})"
    except ssl.SSLError as exc:
        return f"TLS handshake failed ({exc.reason or exc})"
    except TimeoutError:
        return f"no TLS handshake within {_PROBE_TIMEOUT_S:.0f} s (a plaintext listener?)"
    except (OSError, ValueError) as exc:
        return f"no connection ({exc.strerror or exc})" if isinstance(exc, OSError) else f"bad address ({exc})"
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    if context is None:
        return "the broker closed the connection without a Kafka answer (a TLS or SASL listener?)"
    return "TLS works but the broker gave no Kafka answer (SASL expected, or not Kafka?)"
