"""A built-in TCP sender and receiver to prove a tunnel carries data intact and to time it
(used by the demo and the tests; run inside namespaces with ``python -m simpletun.lab.flow``).

    python -m simpletun.lab.flow recv HOST PORT      prints "<bytes> <sha256>" after one transfer
    python -m simpletun.lab.flow send HOST PORT SIZE prints "<bytes> <sha256> <seconds>"
    python -m simpletun.lab.flow sink HOST PORT STREAMS        prints "<bytes> <seconds>"
    python -m simpletun.lab.flow blast HOST PORT STREAMS SECONDS   (throughput, for the bench)

The data is a deterministic pseudo-random stream (SHA-256 in counter mode), so both sides
can be checked against each other without shipping a file.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import threading
import time

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


def sink(host: str, port: int, streams: int) -> tuple[int, float]:
    """Accept ``streams`` connections and count what arrives until all end; returns
    (bytes, seconds from the first byte to the last)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    totals = [0] * streams
    first: list[float] = []
    last = [0.0]

    def drain(conn: socket.socket, i: int) -> None:
        buf = bytearray(CHUNK)
        with conn:
            while n := conn.recv_into(buf):
                if not first:
                    first.append(time.perf_counter())
                totals[i] += n
        last[0] = max(last[0], time.perf_counter())

    with socket.create_server((host, port), family=family, backlog=streams) as srv:
        print("ready", flush=True)
        threads = []
        for i in range(streams):
            conn, _ = srv.accept()
            t = threading.Thread(target=drain, args=(conn, i))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
    return sum(totals), (last[0] - first[0]) if first else 0.0


def blast(host: str, port: int, streams: int, seconds: float) -> None:
    """Send as fast as possible on ``streams`` connections for ``seconds``."""
    data = pattern(CHUNK * 4)
    deadline = time.perf_counter() + seconds

    def push() -> None:
        with socket.create_connection((host, port), timeout=30) as conn:
            while time.perf_counter() < deadline:
                conn.sendall(data)

    threads = [threading.Thread(target=push) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


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
        total, seconds = sink(argv[1], int(argv[2]), int(argv[3]))
        print(total, f"{seconds:.6f}", flush=True)
        return 0
    if len(argv) >= 5 and argv[0] == "blast":
        blast(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
