"""A built-in TCP sender and receiver to prove a tunnel carries data intact and to time it
(used by the demo and the tests; run inside namespaces with ``python -m simpletun.lab.flow``).

    python -m simpletun.lab.flow recv HOST PORT      prints "<bytes> <sha256>" after one transfer
    python -m simpletun.lab.flow send HOST PORT SIZE prints "<bytes> <sha256> <seconds>"
    python -m simpletun.lab.flow sink HOST PORT STREAMS        prints "<bytes> <seconds>"
    python -m simpletun.lab.flow blast HOST PORT STREAMS SECONDS   prints "connected <n>"

``blast`` and ``sink`` measure throughput for the bench. ``blast`` keeps retrying a
connection whose SYN was lost (on a lossy link) until its time is up, and says how many of
its streams connected; ``sink`` waits for STREAMS connections, or for the number given on
its standard input (``blast``'s count) if one arrives first.

The data is a deterministic pseudo-random stream (SHA-256 in counter mode), so both sides
can be checked against each other without shipping a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import sys
import threading
import time
from typing import TextIO

CHUNK = 256 * 1024


def pattern(size: int, seed: bytes = b"simpletun") -> bytes:
    """``size`` deterministic pseudo-random bytes."""
    out = bytearray()
    block = hashlib.sha256(seed).digest()
    counter = 0
    while len(out) < size:
        # 32 bytes per hash is slow; expand each hash into a 4 KiB block cheaply
        h = hashlib.sha256(block + counter.to_bytes(8, "big")).digest()
        out += h * 128
        counter += 1
    return bytes(out[:size])


def receive(host: str, port: int) -> tuple[int, str]:
    """Accept one connection, read it to the end, return (bytes, sha256 hex); the digest
    is also sent back so the sender can time the whole transfer end to end."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, port), family=family) as srv:
        print("ready", flush=True)
        conn, _ = srv.accept()
        with conn:
            digest = hashlib.sha256()
            total = 0
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := conn.recv_into(buf):
                digest.update(view[:n])
                total += n
            hexdigest = digest.hexdigest()
            conn.sendall(f"{total} {hexdigest}\n".encode())
    return total, hexdigest


def send(host: str, port: int, size: int, timeout: float = 120) -> tuple[int, str, float]:
    """Send ``size`` bytes, wait for the receiver's digest; return (bytes, sha256, seconds)."""
    data = pattern(size)
    digest = hashlib.sha256(data).hexdigest()
    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(200):
            answer += chunk
    elapsed = time.perf_counter() - start
    got_size, got_digest = answer.decode().split()
    if int(got_size) != size or got_digest != digest:
        raise SystemExit(f"MISMATCH: sent {size} {digest}, received {got_size} {got_digest}")
    return size, digest, elapsed


def sink(host: str, port: int, streams: int, expected: TextIO | None = None
         ) -> tuple[int, float]:
    """Accept ``streams`` connections (or as many as a line read from ``expected`` says,
    if it comes first) and count what arrives until all end; returns (bytes, seconds from
    the first connection to the last byte)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    totals = [0] * streams
    first: list[float] = []
    last = [0.0]
    wanted = [streams]

    def drain(conn: socket.socket, i: int) -> None:
        buf = bytearray(CHUNK)
        with conn:
            while n := conn.recv_into(buf):
                totals[i] += n
        last[0] = max(last[0], time.perf_counter())

    def read_expected() -> None:
        assert expected is not None
        line = expected.readline()
        with contextlib.suppress(ValueError):
            wanted[0] = min(streams, int(line))

    if expected is not None:
        threading.Thread(target=read_expected, daemon=True).start()
    with socket.create_server((host, port), family=family, backlog=streams) as srv:
        srv.settimeout(0.1)
        print("ready", flush=True)
        threads: list[threading.Thread] = []
        while len(threads) < wanted[0]:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            if not first:
                first.append(time.perf_counter())
            t = threading.Thread(target=drain, args=(conn, len(threads)))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
    moved = sum(totals)
    return moved, (last[0] - first[0]) if moved else 0.0


def connect(host: str, port: int, deadline: float, first_wait: float = 0.2
            ) -> socket.socket | None:
    """A connection to (host, port), or None if none could be made before ``deadline``
    (``time.perf_counter()``). A SYN lost on the way is not left to the kernel's first
    retransmission (1 s later): each try waits a little longer, then a new one starts."""
    wait = first_wait
    while (left := deadline - time.perf_counter()) > 0:
        began = time.perf_counter()
        try:
            return socket.create_connection((host, port), timeout=min(wait, left))
        except OSError:  # timed out, or refused: the receiver is not listening yet
            time.sleep(max(0.0, min(0.05 - (time.perf_counter() - began),
                                    deadline - time.perf_counter())))
            wait = min(wait * 2, 2.0)
    return None


def blast(host: str, port: int, streams: int, seconds: float) -> int:
    """Send as fast as possible on ``streams`` connections until ``seconds`` after the
    start; returns how many of them connected in that time."""
    data = pattern(CHUNK * 4)
    deadline = time.perf_counter() + seconds
    connected = [0]
    lock = threading.Lock()

    def push() -> None:
        conn = connect(host, port, deadline)
        if conn is None:
            return
        with lock:
            connected[0] += 1
        with conn:
            conn.settimeout(30)
            while time.perf_counter() < deadline:
                conn.sendall(data)

    threads = [threading.Thread(target=push) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return connected[0]


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "recv":
        total, digest = receive(argv[1], int(argv[2]))
        print(total, digest, flush=True)
        return 0
    if len(argv) >= 4 and argv[0] == "send":
        size, digest, seconds = send(argv[1], int(argv[2]), int(argv[3]))
        print(size, digest, f"{seconds:.6f}", flush=True)
        return 0
    if len(argv) >= 4 and argv[0] == "sink":
        total, seconds = sink(argv[1], int(argv[2]), int(argv[3]), sys.stdin)
        print(total, f"{seconds:.6f}", flush=True)
        return 0
    if len(argv) >= 5 and argv[0] == "blast":
        connected = blast(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))
        print("connected", connected, flush=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
