"""A lean HTTP/1.1 load generator: N keep-alive connections, pre-encoded requests, latencies.

Python HTTP clients cost more CPU per request than a small ASGI service spends answering it, and
on a small machine the client shares the cores with the server, so this one does as little as it
can: every request is encoded once up front, each connection is an ``asyncio.Protocol`` (on
uvloop when it is installed) that writes its next request as soon as the previous answer is in,
and a response is parsed only as far as its status code and ``Content-Length``.

Every connection sends back to back (closed loop): ``--clients`` requests are in flight at any
time. A run has a warm-up (answers not counted) and then a timed window of ``--duration``
seconds; answers completed inside the window count towards requests/s, and the latency of each
is the time from writing its request to reading the last byte of its answer. Any answer that is
not 2xx, any connection the server drops and any request left unanswered for ``--timeout``
seconds is an error: the run still prints its figures but exits with status 1.

Bodies come from a file with one request body per line (the line break is not sent). The figures
are printed on stdout as one JSON object::

    python benchmarks/loadgen.py --port 8000 --path /predict --bodies bodies.jsonl \\
        --clients 16 --warmup 2 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

_HEADER_END = b"\r\n\r\n"
_CONTENT_LENGTH = b"\r\ncontent-length:"
_MAX_HEADER = 65_536


class LoadError(RuntimeError):
    """The load could not be run (the server refused connections or spoke no HTTP/1.1)."""


def encode_requests(
    host: str, port: int, path: str, bodies: Sequence[bytes], content_type: str
) -> list[bytes]:
    """The complete HTTP/1.1 keep-alive POST requests carrying ``bodies``, ready to write."""
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
    return [f"{head}Content-Length: {len(b)}\r\n\r\n".encode("ascii") + b for b in bodies]


def percentile(ordered: Sequence[int], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..100) of an ascending sequence; NaN when empty.

    Example:
        >>> percentile([10, 20, 30, 40], 50)
        20
        >>> percentile([10, 20, 30, 40], 99)
        40
    """
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


@dataclass
class _Run:
    requests: list[bytes]
    warmup_end_ns: int
    end_ns: int
    latencies_ns: list[int] = field(default_factory=list)
    status: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    timed_errors: int = 0
    first_error: str | None = None
    completed_total: int = 0
    sent_total: int = 0
    active: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def error(self, message: str, now: int) -> None:
        self.errors += 1
        if self.warmup_end_ns <= now <= self.end_ns:
            self.timed_errors += 1
        if self.first_error is None:
            self.first_error = message


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending its next request as soon as an answer is complete."""

    def __init__(self, run: _Run, offset: int) -> None:
        self._run = run
        self._next = offset
        self._buffer = bytearray()
        self._body_end = -1  # index in the buffer where the current answer ends; -1: unknown
        self._status = 0
        self._started = 0
        self._transport: asyncio.Transport | None = None
        self.waiting = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._run.active += 1
        self._send()

    def _send(self) -> None:
        run = self._run
        if time.perf_counter_ns() >= run.end_ns or self._transport is None:
            self._stop()
            return
        request = run.requests[self._next % len(run.requests)]
        self._next += 1
        self.waiting = True
        run.sent_total += 1
        self._started = time.perf_counter_ns()
        self._transport.write(request)

    def _stop(self) -> None:
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.close()
            self._run.active -= 1
            if self._run.active == 0:
                self._run.finished.set()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if self._body_end < 0:
            header_end = buffer.find(_HEADER_END)
            if header_end < 0:
                if len(buffer) > _MAX_HEADER:
                    self._fail("response header longer than 64 KiB")
                return
            head = bytes(buffer[:header_end]).lower()
            if not head.startswith(b"http/1.1 "):
                self._fail(f"not an HTTP/1.1 response: {bytes(buffer[:40])!r}")
                return
            self._status = int(head[9:12])
            at = head.find(_CONTENT_LENGTH)
            if at < 0:
                self._fail(
                    "response without Content-Length (chunked answers are not supported); "
                    f"header: {head[:200]!r}"
                )
                return
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + len(_CONTENT_LENGTH) : stop if stop >= 0 else None])
            self._body_end = header_end + len(_HEADER_END) + length
        if len(buffer) < self._body_end:
            return
        if len(buffer) > self._body_end:
            self._fail("the server sent more than one answer to one request")
            return
        now = time.perf_counter_ns()
        self._answered(self._status, now)
        buffer.clear()
        self._body_end = -1
        self._send()

    def _answered(self, status: int, now: int) -> None:
        run = self._run
        self.waiting = False
        run.status[status] += 1
        if not 200 <= status < 300:
            run.error(f"HTTP {status}", now)
            return
        run.completed_total += 1
        if run.warmup_end_ns <= now <= run.end_ns:
            run.latencies_ns.append(now - self._started)

    def _fail(self, message: str) -> None:
        self._run.error(message, time.perf_counter_ns())
        self.waiting = False
        self._stop()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            reason = f": {exc}" if exc is not None else ""
            self._run.error(f"the server closed a connection{reason}", time.perf_counter_ns())
            self._stop()


async def _drive(
    host: str, port: int, requests: list[bytes], clients: int, warmup_s: float, duration_s: float,
    timeout_s: float,
) -> _Run:  # fmt: skip
    loop = asyncio.get_running_loop()
    start = time.perf_counter_ns()
    warmup_end = start + int(warmup_s * 1e9)
    run = _Run(requests, warmup_end, warmup_end + int(duration_s * 1e9))
    connections: list[_Connection] = []
    for index in range(clients):
        offset = index * max(1, len(requests) // clients)
        try:
            _, protocol = await loop.create_connection(
                functools.partial(_Connection, run, offset), host, port
            )
        except OSError as err:
            raise LoadError(f"cannot connect to {host}:{port}: {err}") from err
        connections.append(protocol)
    remaining = (run.end_ns - time.perf_counter_ns()) / 1e9 + timeout_s
    try:
        await asyncio.wait_for(run.finished.wait(), timeout=max(remaining, timeout_s))
    except TimeoutError:
        stuck = sum(c.waiting for c in connections)
        run.error(f"{stuck} request(s) got no answer within {timeout_s:g} s", run.end_ns)
    for connection in connections:
        connection._stop()
    return run


def run_load(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[bytes],
    *,
    clients: int = 16,
    warmup_s: float = 2.0,
    duration_s: float = 10.0,
    timeout_s: float = 30.0,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """Run the load and return its figures (requests/s, latency percentiles in ms, errors).

    Raises:
        ValueError: No bodies, fewer than one client, or a duration that is not positive.
        LoadError: The server cannot be reached.
    """
    if not bodies:
        raise ValueError("no request bodies: give at least one")
    if clients < 1 or duration_s <= 0 or warmup_s < 0:
        raise ValueError(
            f"need clients >= 1, duration > 0 and warmup >= 0; got {clients}, {duration_s}, "
            f"{warmup_s}"
        )
    requests = encode_requests(host, port, path, bodies, content_type)
    try:
        import uvloop
    except ImportError:
        runner = asyncio.Runner()
        event_loop = "asyncio"
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        event_loop = "uvloop"
    cpu_start = time.process_time()
    gc.disable()  # nothing here makes cycles; a collection would only add jitter
    try:
        with runner:
            run = runner.run(_drive(host, port, requests, clients, warmup_s, duration_s, timeout_s))
    finally:
        gc.enable()
    cpu_s = time.process_time() - cpu_start
    ordered = sorted(run.latencies_ns)
    count = len(ordered)

    def ms(ns: float) -> float:
        return round(ns / 1e6, 4)

    return {
        "clients": clients,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "requests": count,
        "rps": round(count / duration_s, 1),
        "p50_ms": ms(percentile(ordered, 50)),
        "p90_ms": ms(percentile(ordered, 90)),
        "p99_ms": ms(percentile(ordered, 99)),
        "max_ms": ms(ordered[-1]) if ordered else float("nan"),
        "mean_ms": ms(sum(ordered) / count) if count else float("nan"),
        "errors": run.errors,
        "timed_errors": run.timed_errors,
        "first_error": run.first_error,
        "status_counts": {str(k): v for k, v in sorted(run.status.items())},
        "sent_total": run.sent_total,
        "completed_total": run.completed_total,
        "client_cpu_s": round(cpu_s, 3),
        "event_loop": event_loop,
    }


def read_bodies(path: Path) -> list[bytes]:
    """One request body per non-empty line of ``path``."""
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/predict")
    parser.add_argument("--bodies", type=Path, required=True, help="one request body per line")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted")
    parser.add_argument("--duration", type=float, default=10.0, help="timed seconds")
    parser.add_argument("--timeout", type=float, default=30.0, help="longest wait for an answer")
    parser.add_argument("--content-type", default="application/json")
    args = parser.parse_args(argv)
    try:
        figures = run_load(
            args.host,
            args.port,
            args.path,
            read_bodies(args.bodies),
            clients=args.clients,
            warmup_s=args.warmup,
            duration_s=args.duration,
            timeout_s=args.timeout,
            content_type=args.content_type,
        )
    except (ValueError, LoadError, OSError) as err:
        print(f"loadgen: {err}", file=sys.stderr)
        return 2
    print(json.dumps(figures))
    if figures["errors"]:
        print(
            f"loadgen: {figures['errors']} error(s), first: {figures['first_error']}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
