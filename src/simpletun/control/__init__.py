"""Control of a running WireGuard device: the userspace API (UAPI) that `wg` speaks."""
