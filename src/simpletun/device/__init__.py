"""The device side: tun/tap file descriptors (tuntap), their packet-information and
virtio_net_hdr headers (pi, vnet), netlink configuration (link, run in a child by isolate)."""
