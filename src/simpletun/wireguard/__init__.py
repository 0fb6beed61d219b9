"""WireGuard, as a sans-IO core: keys, the Noise IKpsk2 handshake, cookies, transport
keypairs with their replay window, the timers of the whitepaper's section 6 and cryptokey
routing (allowed IPs), all pure (the time is passed in); plus the engine that joins a tun
device and a UDP socket through it (:mod:`.engine`)."""
