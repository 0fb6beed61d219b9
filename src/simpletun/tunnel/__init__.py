"""The plaintext tunnel loops over a TCP stream (stream, workers), with their admission,
timing and log helpers (admission, liveness, backoff, ratelimit, mtu). The encrypted
tunnel over every transport is the WireGuard engine (simpletun.wireguard.engine)."""
