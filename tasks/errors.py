"""Errors the stages share and the retry policy of their Prefect tasks.

A :class:`PermanentError` is a failure no retry can fix (bad credentials, a missing product,
bad input, a host name that does not resolve): :func:`retry_condition` ends the task at once
for it; anything else is retried, each retry announced with its delay and attempt number.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
from collections.abc import Iterator
from typing import Any

from insarflow.tasks.credentials import CredentialsError

log = logging.getLogger(__name__)


class PermanentError(RuntimeError):
    """A failure that retrying cannot fix (bad credentials, missing product, bad input)."""


class ServiceUnreachable(PermanentError):
    """A network failure no retry fixes: the host name does not resolve, or TLS fails."""


_HOST_IN_TEXT = re.compile(r"host='([^']+)'")
_DNS_FAILURE = (
    "NameResolutionError",
    "Name or service not known",
    "nodename nor servname",
    "Temporary failure in name resolution",
    "getaddrinfo failed",
)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, what it wraps (``__cause__``, ``__context__``, urllib3's ``reason``, exception
    arguments), recursively, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += list(current.args)
        todo += [e for e in linked if isinstance(e, BaseException)]


def unreachable_service(exc: BaseException, service: str) -> ServiceUnreachable | None:
    """A plain-words error when ``exc`` is a DNS or TLS failure reaching ``service``."""
    host = ""
    for cause in _causes(exc):
        request = getattr(cause, "_request", None)  # httpx errors carry their request
        if request is not None and not host:
            host = request.url.host
        found = _HOST_IN_TEXT.search(str(cause))
        if found and not host:
            host = found.group(1)
    text = " | ".join(f"{type(c).__name__}: {c}" for c in _causes(exc))
    where = f"{service} ({host})" if host else service
    if any(isinstance(c, socket.gaierror) for c in _causes(exc)) or any(
        marker in text for marker in _DNS_FAILURE
    ):
        return ServiceUnreachable(
            f"cannot reach {where}: the host name does not resolve. Check that this machine "
            "is online and its DNS works (or the proxy in HTTPS_PROXY), then run again."
        )
    if any(isinstance(c, ssl.SSLError) for c in _causes(exc)) or "SSLError" in text:
        return ServiceUnreachable(
            f"cannot reach {where}: the secure (TLS) connection failed. Check the system "
            "clock, any proxy that intercepts HTTPS, and the CA certificates "
            "(SSL_CERT_FILE or REQUESTS_CA_BUNDLE), then run again."
        )
    return None


def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a task unless it failed permanently; say when."""
    data = getattr(state, "data", None)
    exc = getattr(data, "result", data)  # a persisted failure wraps it in a result record
    if isinstance(exc, PermanentError | CredentialsError):
        return False
    if isinstance(exc, BaseException) and unreachable_service(exc, task.name) is not None:
        return False
    attempt, attempts = task_run.run_count, task.retries + 1
    if attempt >= attempts:
        return True  # Prefect ends the run; nothing to announce
    delays = task.retry_delay_seconds
    delay = delays[min(attempt - 1, len(delays) - 1)] if isinstance(delays, list) else delays
    log.warning(
        "%s failed (%s); retrying in %s s (attempt %d of %d)",
        task.name,
        f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else exc,
        f"{delay:g}",
        attempt + 1,
        attempts,
    )
    return True
