"""The plaintext tunnel loops: over a TCP stream (stream, workers) and over datagrams
(datagram), with their timing helpers (liveness, backoff)."""
