"""The egress audit: a record of every request a run sends off this machine.

What is recorded, and when
    ``web-search``   every query sent to the web search provider, with its endpoint — always, even
                     when the provider runs on loopback: a local SearXNG forwards the query to public
                     search engines, so the query leaves the machine all the same.
    ``page-fetch``   every URL fetched to read a search result (each redirect hop is its own request)
                     — always, for the same reason an audit is wanted at all: the user opted into the
                     web and should be able to see exactly where the run went.
    ``llm``          the chat endpoint, once per session, with a running count of the requests sent
    ``embeddings``   and of their payload bytes — only when the endpoint is *not* on loopback (a
                     server on this machine is not egress). `EgressLog(include_loopback=True)` records
                     those too, for tests and for users who want to see them. The embeddings record
                     is the configured endpoint or the one the run's knowledge base was built with
                     (its queries are embedded there); requests are counted by `meter_embedder`.

A record carries the endpoint as ``scheme://host:port/path`` — never user info, query string or
fragment, where API keys and tokens tend to hide — a `detail` (the query text or the URL fetched)
and `bytes` (of the reply, for web requests). Credentials are never recorded: every provider sends
its key in a header.

Trade-offs
    * Records are written the moment the request is made (straight into the run journal once the
      log is attached to it), not held back with the step the way events are: the request has
      happened whether or not the step survives a crash, and an audit that forgets requests is worse
      than one that lists a request whose step is later redone.
    * LLM traffic is one row per endpoint and session with counters, not one row per call: a run
      makes a hundred calls to the same place, and the prompts themselves are in the step records.
      The byte count for an LLM is the UTF-8 size of the prompt and reply texts, not the wire size
      (JSON framing, headers and TLS are not visible at this layer).
    * Loopback is decided from the URL alone (``localhost``, ``127.0.0.0/8``, ``::1``), without a DNS
      lookup: resolving a name just to decide whether to log it would itself be a network request.
      Any other name counts as remote, so an audit can over-report but never hide a request.

Where the pieces are: this module is the recording side every adapter reports into (records, the
log, meters); `deepdraft.llm.metered.MeteredLLM` counts a chat endpoint's traffic, and
`deepdraft.run.wiring.audit_endpoints` decides, from the settings, which endpoints a run audits.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal, Protocol
from urllib.parse import urlsplit

__all__ = [
    "ALWAYS_RECORDED",
    "EgressKind",
    "EgressLog",
    "EgressRecord",
    "EgressStore",
    "EndpointMeter",
    "is_loopback_url",
    "meter_embedder",
    "public_endpoint",
]

EgressKind = Literal["web-search", "page-fetch", "llm", "embeddings", "kb-database"]

ALWAYS_RECORDED: frozenset[str] = frozenset({"web-search", "page-fetch"})
"""Kinds recorded even on loopback: their content goes on to the internet (see the module docstring)."""


@dataclass(frozen=True)
class EgressRecord:
    """One outbound request (or, for `llm` and `embeddings`, one endpoint with its request count)."""

    kind: str
    endpoint: str
    detail: str
    at: float
    bytes: int = 0
    requests: int = 1
    seq: int = 0
    """Number within the run (1, 2, 3…), assigned by the journal; 0 until stored."""


class EgressStore(Protocol):
    """Where records are kept for good; `deepdraft.store.journal.Journal` is one."""

    def record_egress(self, run_id: str, record: EgressRecord) -> int: ...

    def add_egress_traffic(self, run_id: str, seq: int, requests: int, bytes: int) -> None: ...


def public_endpoint(url: str) -> str:
    """``scheme://host:port/path`` of `url`: no user info, query or fragment, the port always explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower() or "http"
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:  # a port that is not a number: show none rather than fail the audit
        port = None
    shown_host = f"[{host}]" if ":" in host else host
    where = f"{shown_host}:{port}" if port is not None else shown_host
    return f"{scheme}://{where}{parts.path or '/'}"


def public_dsn(dsn: str) -> str:
    """A Postgres DSN as it may be shown and recorded: ``postgresql://user@host:port/dbname``.

    Takes the URI and the ``key=value`` forms; the password (and every other option) is dropped, and
    text that is neither form is shown as ``<invalid DSN>`` since it may be a password.
    """
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        try:
            port = parts.port or 5432
        except ValueError:
            return "<invalid DSN>"
        host = parts.hostname or ""
        if not host:  # a socket folder given as ?host=/path
            host = next((v for k, v in _query_pairs(parts.query) if k == "host"), "localhost")
        user = f"{parts.username}@" if parts.username else ""
        return f"postgresql://{user}{host}:{port}/{parts.path.lstrip('/')}"
    pairs = dict(re.findall(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)", dsn))
    if not pairs:
        return "<invalid DSN>"
    user = f"{pairs['user'].strip(chr(39))}@" if pairs.get("user") else ""
    host = pairs.get("host", "localhost").strip("'")
    return f"postgresql://{user}{host}:{pairs.get('port', '5432')}/{pairs.get('dbname', '').strip(chr(39))}"


def _query_pairs(query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(query)


def is_loopback_url(url: str) -> bool:
    """True when `url` names this machine by a loopback address or ``localhost`` (no DNS lookup)."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always loopback
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EndpointMeter:
    """Counts requests and bytes sent to one endpoint, into that endpoint's audit record."""

    def __init__(self, log: EgressLog, index: int) -> None:
        self._log, self._index = log, index

    def add(self, requests: int = 1, bytes: int = 0) -> None:
        self._log._add_traffic(self._index, requests, bytes)


class EgressLog:
    """Collects a run's egress records; once `attach`ed to a store, writes each one at once.

    Records made before `attach` (there should be none: retrievers only search inside a run) are
    kept and written when it happens. Safe to use from several threads (pages are fetched in
    parallel).
    """

    def __init__(self, *, include_loopback: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.include_loopback = include_loopback
        self._clock = clock
        self._lock = threading.Lock()
        self._records: list[EgressRecord] = []
        self._endpoints: dict[tuple[str, str], int] = {}  # (kind, endpoint) → index of its record
        self._store: EgressStore | None = None
        self._run_id = ""

    def attach(self, store: EgressStore, run_id: str) -> None:
        """Write every record to `store` under `run_id` from now on, starting with those kept so far."""
        with self._lock:
            self._store, self._run_id = store, run_id
            self._records = [self._persist(record) for record in self._records]

    def detach(self) -> None:
        """Stop writing to the store (it is about to be closed); later records are kept in memory."""
        with self._lock:
            self._store = None

    @contextmanager
    def attached(self, store: EgressStore, run_id: str) -> Iterator[EgressLog]:
        """`attach` for the duration of a ``with`` block (the store's own lifetime)."""
        self.attach(store, run_id)
        try:
            yield self
        finally:
            self.detach()

    @property
    def records(self) -> list[EgressRecord]:
        """A snapshot of the records of this log, in the order they were made."""
        with self._lock:
            return list(self._records)

    def wants(self, kind: str, url: str) -> bool:
        """Whether a request of `kind` to `url` is recorded (see the module docstring)."""
        return kind in ALWAYS_RECORDED or self.include_loopback or not is_loopback_url(url)

    def record(self, kind: EgressKind, url: str, detail: str, bytes: int = 0) -> None:
        """Record one request to `url` (its query string is kept out of the endpoint)."""
        if self.wants(kind, url):
            self._append(EgressRecord(kind, public_endpoint(url), detail, self._clock(), bytes))

    def endpoint(self, kind: EgressKind, url: str, detail: str) -> EndpointMeter | None:
        """Record that this session talks to `url`, and return a meter for its traffic.

        An endpoint is recorded once per kind: asking again returns a meter of the same record. None
        when the endpoint is not recorded (loopback): there is nothing to count then.
        """
        if not self.wants(kind, url):
            return None
        key = (kind, public_endpoint(url))
        with self._lock:
            index = self._endpoints.get(key)
        if index is None:
            index = self._append(EgressRecord(kind, key[1], detail, self._clock(), 0, requests=0))
            with self._lock:
                index = self._endpoints.setdefault(key, index)
        return EndpointMeter(self, index)

    def _append(self, record: EgressRecord) -> int:
        with self._lock:
            self._records.append(self._persist(record))
            return len(self._records) - 1

    def _persist(self, record: EgressRecord) -> EgressRecord:
        if self._store is None or record.seq:
            return record
        return replace(record, seq=self._store.record_egress(self._run_id, record))

    def _add_traffic(self, index: int, requests: int, bytes: int) -> None:
        with self._lock:
            record = self._records[index]
            self._records[index] = replace(
                record, requests=record.requests + requests, bytes=record.bytes + bytes
            )
            if self._store is not None and record.seq:
                self._store.add_egress_traffic(self._run_id, record.seq, requests, bytes)


class MeterableEmbedder(Protocol):
    """An embedder that sends texts to an OpenAI-compatible endpoint (`OpenAIEmbedder`)."""

    base_url: str
    model: str
    meter: EndpointMeter | None


def meter_embedder(log: EgressLog, embedder: MeterableEmbedder) -> None:
    """Record `embedder`'s endpoint in `log` and have it count every request it sends from now on."""
    embedder.meter = log.endpoint("embeddings", embedder.base_url, f"embeddings, model {embedder.model}")
