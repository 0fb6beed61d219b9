"""``simpletun show`` and the control sockets in namespaces: an encrypted tunnel's and a
plaintext one's fields against what was configured and moved, the plaintext socket
read-only, and ``simpletun devices`` naming a multi-queue vnet_hdr device and its holder."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from simpletun.control import status
from simpletun.lab.netns import Lab
from simpletun.lab.testbed import Testbed, unique_iface

from ..conftest import simpletun


def _show_json(bed: Testbed, name: str) -> dict[str, Any]:
    done = simpletun("show", name, "--json", ns=bed.server)
    assert done.returncode == 0, done.stderr
    tunnels = json.loads(done.stdout)
    assert len(tunnels) == 1, tunnels
    result: dict[str, Any] = tunnels[0]
    return result


def _show_until(bed: Testbed, name: str, ready: Callable[[dict[str, Any]], object],
                timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = _show_json(bed, name)
        if ready(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_show_an_encrypted_tunnel_as_configured_and_moved(lab: Lab) -> None:
    bed = Testbed(lab, keys=True, ipv6_overlay=False)
    bed.start()
    size, _digest, _secs = bed.transfer(300_000)
    started = time.time()
    server = _show_json(bed, bed.iface)
    assert server["interface"] == bed.iface and server["encrypted"]
    assert (server["transport"], server["wire"], server["role"]) == ("tcp", "wireguard",
                                                                     "server")
    assert server["listen_port"] == bed.port
    [peer] = server["peers"]
    assert peer["public_key"] == bed.client_public
    assert peer["allowed_ips"] == ["0.0.0.0/0", "::/0"]
    assert peer["endpoint"].startswith(bed.client_underlay + ":")
    assert peer["rx_bytes"] >= size  # what the client sent, with headers
    assert peer["rx_packets"] > 0 and peer["tx_packets"] > 0  # messages: super-packets
    assert started - 60 < peer["latest_handshake"] <= started + 1
    client = _show_json(bed, bed.client_iface)
    assert client["role"] == "client" and client["public_key"] == bed.client_public
    [cpeer] = client["peers"]
    assert cpeer["public_key"] == bed.server_public
    assert cpeer["endpoint"] == f"{bed.server_underlay}:{bed.port}"
    assert cpeer["tx_bytes"] >= size and cpeer["persistent_keepalive"] == 10

    text = simpletun("show", bed.iface, ns=bed.server)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[:3] == [f"interface: {bed.iface}", f"  public key: {bed.server_public}",
                         "  private key: (hidden)"]
    assert "  transport: tcp" in lines and "  wire: wireguard" in lines
    assert f"peer: {bed.client_public}" in lines
    assert "  allowed ips: 0.0.0.0/0, ::/0" in lines
    handshake = [x for x in lines if x.startswith("  latest handshake: ")]
    assert handshake and handshake[0].endswith(("seconds ago", "second ago", "Now")), lines
    transfer = [x for x in lines if x.startswith("  transfer: ")]
    assert transfer and " KiB received, " in transfer[0], lines


@pytest.mark.parametrize("workers", [1, 2])
def test_show_a_plaintext_tunnel_and_its_socket_refuses_set(lab: Lab, workers: int) -> None:
    bed = Testbed(lab, iface=unique_iface("pt"), ipv6_overlay=False)
    bed.client_iface = unique_iface("pt")
    bed.start(server_extra=["--workers", str(workers)],
              client_extra=["--workers", str(workers)])
    size, _digest, _secs = bed.transfer(200_000)
    # workers report to their parent about once a second: wait for the transfer to show
    server = _show_until(bed, bed.iface, lambda t: t["peers"] and t["peers"][0]["rx_bytes"]
                         >= size)
    assert not server["encrypted"] and server["public_key"] is None
    assert (server["transport"], server["wire"], server["role"]) == ("tcp", "native",
                                                                     "server")
    assert server["listen_port"] == bed.port
    [peer] = server["peers"]
    assert peer["public_key"] is None
    assert peer["endpoint"].startswith(bed.client_underlay + ":")
    assert peer["rx_bytes"] >= size and peer["rx_packets"] > 0 and peer["tx_packets"] > 0
    assert time.time() - 60 < peer["latest_handshake"] <= time.time() + 1
    client = _show_until(bed, bed.client_iface, lambda t: t["peers"] and
                         t["peers"][0]["tx_bytes"] >= size)
    assert client["role"] == "client" and client["listen_port"] == 0
    assert client["peers"][0]["endpoint"] == f"{bed.server_underlay}:{bed.port}"
    assert client["peers"][0]["tx_bytes"] >= size

    path = status.socket_path(bed.iface, status.PLAIN_DIRECTORY)
    assert status.exchange(path, "set=1\nlisten_port=1\n\n") == "errno=-1\n\n"
    assert status.exchange(path, "get=1\n\n") == f"listen_port={bed.port}\nerrno=0\n\n"
    text = simpletun("show", ns=bed.server)
    assert f"interface: {bed.iface}" in text.stdout.splitlines(), text.stdout
    assert "peer: (plaintext)" in text.stdout

    assert bed.server_proc is not None
    bed.server_proc.stop()
    assert not status.find(bed.iface), "the socket is removed on exit"


def test_show_a_name_that_does_not_answer_is_one_line_and_exit_1(lab: Lab) -> None:
    ns = lab.host("show")
    name = unique_iface("ns")
    done = simpletun("show", name, ns=ns)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"simpletun: no tunnel {name} is running (no control socket in /var/run/wireguard "
        "or /run/simpletun): 'simpletun show' lists those that are"]
    # a socket nobody serves (a tunnel killed without cleaning up)
    path = status.socket_path(name, status.PLAIN_DIRECTORY)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
        try:
            done = simpletun("show", name, ns=ns)
            assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
            assert f"simpletun: {name} does not answer" in done.stderr
            assert name not in simpletun("show", ns=ns).stdout  # listing all: skipped
        finally:
            import os
            os.unlink(path)


@pytest.mark.parametrize("queues", [2])
def test_devices_lists_a_multi_queue_vnet_hdr_device_and_its_holder(lab: Lab,
                                                                    queues: int) -> None:
    bed = Testbed(lab, iface=unique_iface("dv"), ipv6_overlay=False)
    ns = bed.server
    name = bed.iface
    assert simpletun("mktun", name, "--multi-queue", "--vnet-hdr", ns=ns).returncode == 0
    proc = bed.start_server("--workers", str(queues))
    done = simpletun("devices", ns=ns)
    assert done.returncode == 0, done.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith(f"{name}: ")]
    assert line == (f"{name}: tun multi_queue vnet_hdr persist; held by pid {proc.proc.pid} "
                    f"(python) and {queues} processes it started"), line
    proc.stop()
    done = simpletun("devices", ns=ns)
    assert f"{name}: tun multi_queue vnet_hdr persist; not held" in done.stdout.splitlines()


def _scrape(bed: Testbed, port: int) -> dict[str, float]:
    """The server's metrics endpoint, scraped from inside its namespace: sample -> value."""
    code = ("import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
            f"'http://127.0.0.1:{port}/metrics',timeout=10).read().decode())")
    done = bed.server.run([sys.executable, "-c", code], timeout=30)
    assert done.returncode == 0, done.stderr
    samples = {}
    for line in done.stdout.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _free_port(bed: Testbed) -> int:
    done = bed.server.run([sys.executable, "-c", "import socket;s=socket.socket();"
                          "s.bind(('127.0.0.1',0));print(s.getsockname()[1])"])
    return int(done.stdout)


def test_metrics_grow_during_a_transfer_with_the_right_peer_labels(lab: Lab) -> None:
    bed = Testbed(lab, keys=True, ipv6_overlay=False)
    port = _free_port(bed)
    bed.start_server("-t", "udp", "--metrics", f"127.0.0.1:{port}")
    assert bed.server_proc is not None
    bed.server_proc.wait_for(f"metrics: serving http://127.0.0.1:{port}/metrics")
    before = _scrape(bed, port)
    name = bed.iface
    assert before[f'simpletun_up{{interface="{name}"}}'] == 1
    assert before[f'simpletun_info{{interface="{name}",role="server",transport="udp",'
                  'wire="wireguard"}'] == 1
    assert before[f'simpletun_peers{{interface="{name}"}}'] == 1
    peer = f'{{interface="{name}",public_key="{bed.client_public}"}}'
    assert before[f"simpletun_peer_receive_bytes_total{peer}"] == 0
    assert before[f"simpletun_peer_latest_handshake_seconds{peer}"] == 0
    bed.start_client("-t", "udp")
    bed.wait_ready()
    size, _digest, _secs = bed.transfer(200_000)
    middle = _scrape(bed, port)
    size2, _digest, _secs = bed.transfer(100_000)
    after = _scrape(bed, port)
    for metric in ("receive_bytes", "receive_packets", "transmit_bytes", "transmit_packets"):
        key = f"simpletun_peer_{metric}_total{peer}"
        assert before[key] < middle[key] < after[key], (metric, before[key], middle[key],
                                                        after[key])
    rx = f"simpletun_peer_receive_bytes_total{peer}"
    assert middle[rx] >= size and after[rx] - middle[rx] >= size2
    assert after[f"simpletun_peer_receive_packets_total{peer}"] >= (size + size2) // 1500
    handshake = after[f"simpletun_peer_latest_handshake_seconds{peer}"]
    assert time.time() - 60 < handshake <= time.time() + 1
    assert 0 <= after[f"simpletun_peer_latest_handshake_age_seconds{peer}"] < 60
    bed.client_proc and bed.client_proc.stop()
    bed.server_proc.stop()


def test_metrics_of_a_stopped_tunnel_say_up_0(lab: Lab) -> None:
    from simpletun.service import metrics

    name = unique_iface("mx")
    with metrics.serve("127.0.0.1", 0, lambda: [name]) as endpoint:
        assert endpoint.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics",
                                    timeout=10) as got:
            text = got.read().decode()
    assert f'simpletun_up{{interface="{name}"}} 0.0' in text.splitlines()
    assert "simpletun_peer_receive_bytes_total{" not in text


@pytest.mark.parametrize("value,message", [
    ("9586", "expected ADDRESS:PORT"),
    ("127.0.0.1:http", "the port is a number from 0 to 65535"),
    ("127.0.0.1:70000", "the port is a number from 0 to 65535"),
    ("::1:9586", "an IPv6 address is written in brackets"),
])
def test_a_bad_metrics_address_is_a_usage_error_before_anything_changes(
        lab: Lab, value: str, message: str) -> None:
    ns = lab.host("mx")
    name = unique_iface("mx")
    done = simpletun("-i", name, "-s", "--metrics", value, ns=ns)
    assert done.returncode == 2, done.stderr
    assert "--metrics" in done.stderr and message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_busy_metrics_port_is_one_line_before_anything_changes(lab: Lab) -> None:
    from simpletun.device import link

    ns = lab.host("mx")
    name = unique_iface("mx")
    holder = ns.popen([sys.executable, "-c", "import socket,sys,time;s=socket.socket();"
                       "s.bind(('127.0.0.1',0));s.listen();print(s.getsockname()[1]);"
                       "sys.stdout.flush();time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    port = int(holder.stdout.readline())
    done = simpletun("-i", name, "-s", "-p", "5599", "--metrics", f"127.0.0.1:{port}", ns=ns)
    holder.kill()
    holder.wait()
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == (f"simpletun: metrics: cannot listen on 127.0.0.1:{port}: "
                         "Address already in use"), lines
    assert not link.exists(name, netns=ns.name)


@pytest.mark.parametrize("impl", ["wireguard-go", "simpletun-wg"])
def test_show_reads_what_wg_reads(lab: Lab, impl: str) -> None:
    """Against wg's own reading of the same UAPI (wg show dump): every field alike; a
    wireguard-go interface (no stats=1) is shown with what it answers."""
    from simpletun.lab import wghost

    ns = lab.host("wg")
    with wghost.WgInterface(ns, impl, listen_port=0) as iface:
        other = wghost.genkey()
        iface.add_peer(wghost.pubkey(other), allowed_ips=["10.9.0.2/32", "fd09::/64"],
                       endpoint="192.0.2.9:51820", keepalive=25,
                       preshared_key=wghost.genpsk())
        iface.set("fwmark", "0x1234")
        dump = iface.show_dump()
        [t] = json.loads(simpletun("show", iface.name, "--json", ns=ns).stdout)
        assert t["public_key"] == dump.interface.public_key == iface.public_key
        assert (t["listen_port"], t["fwmark"]) == (dump.interface.listen_port, 0x1234)
        [want] = dump.peers
        [peer] = t["peers"]
        assert (peer["public_key"], peer["endpoint"], peer["allowed_ips"],
                peer["latest_handshake"], peer["rx_bytes"], peer["tx_bytes"],
                peer["persistent_keepalive"], peer["preshared_key"]) == (
            want.public_key, want.endpoint, list(want.allowed_ips), want.latest_handshake,
            want.rx_bytes, want.tx_bytes, want.persistent_keepalive, True)
        if impl == "wireguard-go":
            assert (t["transport"], t["wire"], t["encrypted"]) == (None, None, True)
        else:
            assert (t["transport"], t["wire"], t["role"]) == ("udp", "wireguard", "peer")
        text = simpletun("show", iface.name, ns=ns).stdout.splitlines()
        assert "  fwmark: 0x1234" in text and "  preshared key: (hidden)" in text
        assert "  persistent keepalive: every 25 seconds" in text
