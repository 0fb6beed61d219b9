"""``simpletun up``/``down`` of wg-quick config files, in a namespace, against wireguard-go in
another on the switch (the same hosts as tests/e2e/test_wg_quick.py): a point-to-point
tunnel with hooks and DNS, a full tunnel by policy routing with the endpoint still reached
through the underlay, ``down`` after ``kill -9``, SIGHUP adding and removing a peer while
another keeps pinging, the engine's uid and capabilities after the drop, and the service's
readiness, reload and stop through sd_notify."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

from simpletun.config import wgconf
from simpletun.device import link
from simpletun.lab import wghost
from simpletun.lab.netns import Lab, Namespace
from simpletun.service import privileges, state
from simpletun.wireguard import keys

from .test_wg_quick import BEYOND4, BEYOND6, FAR_ENDPOINT, Setup, full_tunnel_peer, ping, routing
from .test_wg_quick import setup as setup  # the fixture
from .wgcases import processes_with, transcribed, wait_until

BIN = os.path.join(os.path.dirname(sys.executable), "simpletun")
PORT = 51831


class Up:
    """A config file NAME.conf (a fresh interface name) in a temporary directory, and
    ``simpletun up``/``down`` run on it inside ``ns``; ``close()`` takes down what is
    left, whatever happened."""

    def __init__(self, ns: Namespace, text: str) -> None:
        self.ns = ns
        self.name = wghost.interface_name()
        self.dir = tempfile.mkdtemp(prefix=f"stup{os.getpid()}-")
        os.chmod(self.dir, 0o755)
        self.path = os.path.join(self.dir, f"{self.name}.conf")
        self.write(text)
        self.transcript: list[str] = []
        #: a fake resolvconf (first on PATH) writing each call and its input to a file
        self.calls = os.path.join(self.dir, "resolvconf.calls")
        fake = os.path.join(self.dir, "bin", "resolvconf")
        os.makedirs(os.path.dirname(fake))
        with open(fake, "w") as f:
            f.write(f'#!/bin/sh\n{{ echo "resolvconf $*"; cat; }} >> {self.calls}\n')
        os.chmod(fake, 0o755)
        self.env = dict(os.environ, PATH=f"{os.path.dirname(fake)}:{os.path.dirname(BIN)}:"
                        f"{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")

    def write(self, text: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text.replace("%DIR", self.dir))

    def run(self, *args: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["ip", "netns", "exec", self.ns.name, BIN, *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        self.transcript.append(f"$ simpletun {' '.join(args)}  (exit {done.returncode})\n"
                               f"{done.stdout}{done.stderr}")
        return done

    def up(self) -> str:
        done = self.run("up", self.path)
        assert done.returncode == 0, self.transcript[-1]
        return done.stderr

    def down(self) -> str:
        done = self.run("down", self.path)
        assert done.returncode == 0, self.transcript[-1]
        return done.stderr

    def state(self) -> state.State:
        st = state.load(self.name)
        assert st is not None and st.engine is not None
        return st

    def wg(self, *args: str) -> str:
        done = self.ns.run([wghost.wg_exe(), *args], timeout=10)
        assert done.returncode == 0, f"wg {' '.join(args)}: {done.stderr}"
        return done.stdout

    def exists(self) -> bool:
        return link.exists(self.name, netns=self.ns.name)

    def close(self) -> None:
        if os.path.exists(state.path(self.name)):
            self.run("down", self.path)
        for pid in processes_with(self.path) + processes_with(self.name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.exists():
            self.ns.run(["ip", "link", "delete", "dev", self.name])
        for leftover in (wghost.socket_path(self.name), state.path(self.name),
                         os.path.join(state.STATE_DIR, f"{self.name}.log")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        shutil.rmtree(self.dir, ignore_errors=True)


def simpletun_up(ns: Namespace, text: str) -> contextlib.AbstractContextManager[Up]:
    return transcribed(Up(ns, text))


def config(s: Setup, allowed_ips: str, endpoint: str, extra: str = "") -> str:
    return ("[Interface]\n"
            "Address = 10.77.0.2/24, fd77::2/64\n"
            f"PrivateKey = {s.private_key}\n"
            f"ListenPort = {PORT}\n"
            f"{extra}"
            "\n[Peer]\n"
            f"PublicKey = {s.go.public_key}\n"
            f"AllowedIPs = {allowed_ips}\n"
            f"Endpoint = {endpoint}\n"
            "PersistentKeepalive = 25\n")


def assert_gone(u: Up) -> None:
    assert not u.exists()
    wait_until(f"the processes of {u.name} end", lambda: not processes_with(u.path))
    assert not os.path.exists(wghost.socket_path(u.name))
    assert not os.path.exists(state.path(u.name))


HOOKS = ("PreUp = echo pre-up %i >> %DIR/hooks\n"
         # a daemon started by a hook holds up's output pipe: up returns all the same
         "PostUp = sleep 60 & echo $! > %DIR/sleeper\n"
         "PostUp = echo post-up %i $(ip -br link show %i | wc -l) >> %DIR/hooks\n"
         "PreDown = echo pre-down %i >> %DIR/hooks\n"
         "PostDown = echo post-down %i >> %DIR/hooks\n"
         "DNS = 10.77.0.53, vpn.example\n")


def test_up_point_to_point_with_hooks_and_dns_then_down(setup: Setup) -> None:
    s = setup
    endpoint = wghost.endpoint_of(s.peer.underlay4, s.go.listen_port or 0)
    with simpletun_up(s.me.ns, config(s, "10.77.0.1/32, fd77::1/128", endpoint, HOOKS)) as u:
        said = u.up()
        with open(os.path.join(u.dir, "sleeper")) as f:
            os.kill(int(f.read()), signal.SIGKILL)
        # it returned (the tunnel runs in the background) after saying what it did
        assert f"[#] echo pre-up {u.name} >> {u.dir}/hooks" in said, said
        assert f"{u.name} up: UDP, 1 peer" in said, said
        assert "can be read by others" not in said, said  # 600, as a key file should be
        st = u.state()
        assert st.supervisor.alive() and st.engine is not None and st.engine.alive()
        for address in ("10.77.0.1", "fd77::1"):
            assert ping(s.me.ns, address, count=5), address
        # wg reads it as any WireGuard interface: the file's peer, keepalive, transfer
        text = u.wg("show", u.name)
        for pattern in (rf"listening port: {PORT}\n", rf"peer: {re.escape(s.go.public_key)}\n",
                        r"allowed ips: 10\.77\.0\.1/32, fd77::1/128\n",
                        r"latest handshake: (Now|\d+ seconds? ago)\n",
                        r"persistent keepalive: every 25 seconds"):
            assert re.search(pattern, text), (pattern, text)
        # addresses, MTU (wg-quick's: the underlay's 1500 less 80), routes
        assert {str(a) for a in link.addresses(u.name, netns=s.me.ns.name)} >= {
            "10.77.0.2/24", "fd77::2/64"}
        assert link.state(u.name, netns=s.me.ns.name).mtu == 1420
        routes = {str(n) for n in link.routes(u.name, netns=s.me.ns.name)}
        assert {"10.77.0.1/32", "fd77::1/128"} <= routes, routes
        with open(u.calls) as f:
            assert f.read() == ("resolvconf -a " + u.name + " -m 0 -x\n"
                                "nameserver 10.77.0.53\nsearch vpn.example\n")
        # up again: refused, nothing changed
        again = u.run("up", u.path)
        assert again.returncode == 1 and again.stderr.count("\n") == 1
        assert f"{u.name} is up already" in again.stderr
        said = u.down()
        # what the tunnel said as it went: the hooks and the engine's summary
        assert f"[#] echo pre-down {u.name} >> {u.dir}/hooks" in said, said
        assert re.search(rf"{u.name}: shutting down: \d+ packets sent, \d+ received", said), \
            said
        assert said.endswith(f" {u.name} down\n"), said
        assert_gone(u)
        with open(os.path.join(u.dir, "hooks")) as f:
            assert f.read().split("\n") == [f"pre-up {u.name}", f"post-up {u.name} 1",
                                            f"pre-down {u.name}", f"post-down {u.name}", ""]
        with open(u.calls) as f:
            assert f.read().endswith(f"resolvconf -d {u.name} -f\n")
        assert not ping(s.me.ns, "10.77.0.1", count=1)
        again = u.run("down", u.path)
        assert again.returncode == 1 and again.stderr == f"simpletun: {u.name} is not up\n"


@pytest.mark.parametrize("workers", [1, 2])
def test_full_tunnel_keeps_the_endpoint_and_down_after_kill_9(setup: Setup,
                                                               workers: int) -> None:
    s = setup
    full_tunnel_peer(s)
    me_ns = s.me.ns
    assert ping(me_ns, FAR_ENDPOINT, count=1) and not ping(me_ns, BEYOND4, count=1)
    before = routing(me_ns)
    endpoint = f"{FAR_ENDPOINT}:{s.go.listen_port}"
    # two workers: as nobody, the second's socket made (and marked) before the drop
    extra = f"Workers = {workers}\n" + ("User = nobody\n" if workers > 1 else "")
    with simpletun_up(me_ns, config(s, "0.0.0.0/0, ::/0", endpoint, extra)) as u:
        u.up()
        # the mark (wg-quick's 51820, the table of the default route) on the engine's socket,
        # every worker's
        assert u.wg("show", u.name, "fwmark").strip() == hex(51820)
        sockets = [line for line in me_ns.run(["ss", "-uapne"], check=True).stdout.splitlines()
                   if f":{PORT} " in line]
        assert len(sockets) == workers and all("fwmark:0xca6c" in line for line in sockets), \
            sockets
        now = routing(me_ns)
        assert "not from all fwmark 0xca6c lookup 51820" in now["ip -4 rule"], now
        assert "from all lookup main suppress_prefixlength 0" in now["ip -6 rule"], now
        for version in ("-4", "-6"):  # main's routes but its default first, as wg-quick's
            lines = now[f"ip {version} rule"].splitlines()
            suppress = next(i for i, line in enumerate(lines) if "suppress_prefixlength" in line)
            mark = next(i for i, line in enumerate(lines) if "not from all fwmark" in line)
            assert suppress < mark, lines
        # so the switch's own subnet is still reached directly, unmarked
        got = me_ns.run(["ip", "route", "get", s.peer.underlay4], check=True).stdout
        assert f"dev {u.name}" not in got, got
        assert f"table ip simpletun-{u.name}" in now["nft"], now["nft"]
        for address in (BEYOND4, BEYOND6):  # everything goes through the tunnel...
            assert ping(me_ns, address), address
        # ...but the tunnel's own packets, marked, by the underlay to the endpoint
        assert u.wg("show", u.name, "endpoints").split()[1] == endpoint
        got = me_ns.run(["ip", "route", "get", FAR_ENDPOINT, "mark", "51820"], check=True)
        assert f"via {s.peer.underlay4}" in got.stdout, got.stdout
        # the tunnel is killed: supervisor first (SIGKILL), its engine follows it
        st = u.state()
        os.kill(st.supervisor.pid, signal.SIGKILL)
        assert st.engine is not None
        wait_until("the engine ends with its supervisor", lambda: not st.engine.alive()
                   if st.engine else True)
        assert routing(me_ns) != before  # the rules and nft tables are still there
        said = u.down()
        assert "is gone: undoing what it set up" in said, said
        assert_gone(u)
        assert routing(me_ns) == before
        assert ping(me_ns, FAR_ENDPOINT, count=1) and not ping(me_ns, BEYOND4, count=1)


def test_sighup_adds_and_removes_a_peer_while_another_keeps_pinging(setup: Setup) -> None:
    s = setup
    endpoint = wghost.endpoint_of(s.peer.underlay4, s.go.listen_port or 0)
    text = config(s, "10.77.0.1/32", endpoint)
    other = wghost.pubkey(wghost.genkey())
    with simpletun_up(s.me.ns, text) as u:
        u.up()
        assert ping(s.me.ns, "10.77.0.1", count=2)
        handshake = u.wg("show", u.name, "latest-handshakes").split()[1]
        pinger = s.me.ns.popen(["ping", "-n", "-q", "-i", "0.05", "-c", "80", "10.77.0.1"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        supervisor = u.state().supervisor.pid
        u.write(text + f"\n[Peer]\nPublicKey = {other}\nAllowedIPs = 10.77.0.9/32\n")
        os.kill(supervisor, signal.SIGHUP)
        wait_until("the new peer is in", lambda: other in u.wg("show", u.name, "peers"))
        wait_until("its route is in", lambda: "10.77.0.9/32" in {
            str(n) for n in link.routes(u.name, netns=s.me.ns.name)})
        time.sleep(0.5)
        u.write(text)
        os.kill(supervisor, signal.SIGHUP)
        wait_until("the new peer is out", lambda: other not in u.wg("show", u.name, "peers"))
        wait_until("its route is out", lambda: "10.77.0.9/32" not in {
            str(n) for n in link.routes(u.name, netns=s.me.ns.name)})
        out, _ = pinger.communicate(timeout=20)
        assert " 80 received, 0% packet loss" in out, out
        # the session went on: no new handshake was needed
        assert u.wg("show", u.name, "latest-handshakes").split()[1] == handshake
        with open(os.path.join(state.STATE_DIR, f"{u.name}.log")) as f:
            said = f.read()
        assert "0 peers removed, 1 added or changed, 2 in all" in said, said
        assert "1 peer removed, 0 added or changed, 1 in all" in said, said
        u.down()
        assert_gone(u)


def test_the_engine_runs_as_the_user_without_capabilities(setup: Setup) -> None:
    s = setup
    endpoint = wghost.endpoint_of(s.peer.underlay4, s.go.listen_port or 0)
    with simpletun_up(s.me.ns, config(s, "10.77.0.1/32", endpoint,
                                      "User = nobody\nGroup = nogroup\nWorkers = 2\n")) as u:
        said = u.up()
        assert ", as nobody" in said
        st = u.state()
        assert st.engine is not None
        nobody = privileges.resolve("nobody", "nogroup")
        follower = children(st.engine.pid)
        assert len(follower) == 1  # the second worker, forked after the drop
        for pid in (st.engine.pid, *follower):
            engine = privileges.read_status(pid)
            assert set(engine.uids) == {nobody.uid} and set(engine.gids) == {nobody.gid}
            assert engine.cap_eff == engine.cap_prm == engine.cap_amb == engine.cap_inh == 0
            assert engine.groups == (nobody.gid,)
        assert privileges.read_status(st.supervisor.pid).uids[0] == 0  # it undoes, as root
        assert ping(s.me.ns, "10.77.0.1", count=3)
        u.down()
        assert_gone(u)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def test_foreground_service_notifies_reloads_and_stops_with_a_summary(setup: Setup) -> None:
    s = setup
    endpoint = wghost.endpoint_of(s.peer.underlay4, s.go.listen_port or 0)
    with simpletun_up(s.me.ns, config(s, "10.77.0.1/32", endpoint)) as u, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        where = os.path.join(u.dir, "notify")
        notify.bind(where)
        notify.settimeout(20)
        env = dict(u.env, NOTIFY_SOCKET=where)
        proc = subprocess.Popen(["ip", "netns", "exec", s.me.ns.name, BIN, "up",
                                 "--foreground", u.path], env=env, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            first = notify.recv(4096).decode()
            assert "READY=1" in first.split("\n"), first
            assert stat.S_ISSOCK(os.stat(wghost.socket_path(u.name)).st_mode)
            assert ping(s.me.ns, "10.77.0.1", count=2)
            proc.send_signal(signal.SIGHUP)
            assert "RELOADING=1" in notify.recv(4096).decode()
            assert "READY=1" in notify.recv(4096).decode()
            # Ctrl-C at its terminal (the whole foreground group): the supervisor takes the
            # tunnel down, the engine its own group, stopped by it
            os.killpg(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=30)
            assert "STOPPING=1" in notify.recv(4096).decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        assert re.search(r"shutting down: \d+ packets sent, \d+ received", err), err
        assert "SIGINT: taking the tunnel down" in err and "engine ended" not in err, err
        assert "Traceback" not in err
        assert_gone(u)


@pytest.mark.parametrize("text, message", [
    ("[Interface]\nAddress = 10.0.0.1/24\n", r"no PrivateKey: add one"),
    ("[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nUser = nosuchuser\n",
     r"no user 'nosuchuser'"),
    ("[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n"
     "ListenPort = 7\nPreUp = false\n", r"PreUp hook failed \(exit status 1\): false"),
    ("[Peer]\nPublicKey = nope\n", r":2: PublicKey: not a key"),
])
def test_mistakes_are_one_line_and_change_nothing(lab: Lab, text: str, message: str) -> None:
    ns = lab.host("up")
    with simpletun_up(ns, text) as u:
        done = u.run("up", u.path)
        assert done.returncode == 1, done
        assert done.stderr.startswith("simpletun: ") or "[#]" in done.stderr, done.stderr
        assert re.search(message, done.stderr.splitlines()[-1]), done.stderr
        assert "Traceback" not in done.stderr
        assert not u.exists() and not os.path.exists(state.path(u.name))
        assert not processes_with(u.path)


def test_the_unit_verifies() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (systemd absent)")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "simpletun@wg0.service")
        done = subprocess.run([BIN, "service-unit"], capture_output=True, text=True, check=True)
        with open(path, "w") as f:
            f.write(done.stdout)
        # the unit's Documentation= page is checked where man is (scripts/setup installs it)
        man = [] if shutil.which("man") else ["--man=no"]
        checked = subprocess.run(["systemd-analyze", "verify", *man, path],
                                 capture_output=True, text=True)
        bad = [line for line in checked.stderr.splitlines() if "simpletun" in line]
        assert checked.returncode == 0 and not bad, checked.stderr
        assert f"ExecStart={BIN} up --foreground %i" in done.stdout


def _scrape(ns: Namespace, port: int) -> dict[str, float]:
    """The metrics endpoint in ``ns``, as {'name{labels}': value}."""
    from simpletun.lab.netns import inside

    with inside(ns.name):
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _metric(scraped: dict[str, float], name: str, **labels: str) -> float:
    found = [v for k, v in scraped.items() if k.partition("{")[0] == name
             and all(f'{label}="{value}"' in k for label, value in labels.items())]
    assert len(found) == 1, (name, labels, scraped)
    return found[0]


@pytest.mark.parametrize("transport", ["tcp", "icmp"])
def test_transports_show_and_metrics(lab: Lab, transport: str) -> None:
    """A server and a client, both ``simpletun up`` of files with Transport: pings, 4 MB each
    way with sha256, the server's metrics scraped during the transfer, ``simpletun show``
    and ``--json`` against what was configured and moved."""
    from simpletun.lab.netns import veth
    from simpletun.lab.testbed import transfer

    srv, cli = lab.host("upsrv"), lab.host("upcli")
    veth(srv, "eth0", cli, "eth0", a_addrs=["192.0.2.1/24"], b_addrs=["192.0.2.2/24"])
    skey, ckey = wghost.genkey(), wghost.genkey()
    spub, cpub = wghost.pubkey(skey), wghost.pubkey(ckey)
    port = 51840 if transport == "tcp" else None
    listen = f"ListenPort = {port}\n" if port else ""
    metrics = 9586
    server_text = (f"[Interface]\nPrivateKey = {skey}\nAddress = 10.88.0.1/24\n{listen}"
                   f"Transport = {transport}\nMetrics = 127.0.0.1:{metrics}\n\n"
                   f"[Peer]\nPublicKey = {cpub}\nAllowedIPs = 10.88.0.2/32\n")
    client_text = (f"[Interface]\nPrivateKey = {ckey}\nAddress = 10.88.0.2/24\n"
                   f"Transport = {transport}\n\n[Peer]\nPublicKey = {spub}\n"
                   f"AllowedIPs = 10.88.0.0/24\nEndpoint = 192.0.2.1:{port or 1}\n")
    with simpletun_up(srv, server_text) as server, simpletun_up(cli, client_text) as client:
        server.up()
        said = client.up()
        assert f"{client.name} up: {transport.upper()}, 1 peer" in said, said
        assert ping(cli, "10.88.0.1", count=3)
        before = _scrape(srv, metrics)
        moved = threading.Thread(target=lambda: [
            transfer(cli, srv, "10.88.0.1", 4 << 20, port=5011),
            transfer(srv, cli, "10.88.0.2", 4 << 20, port=5012)])
        moved.start()
        during = _scrape(srv, metrics)
        moved.join(timeout=120)
        after = _scrape(srv, metrics)
        labels = {"interface": server.name, "public_key": cpub}
        assert _metric(after, "simpletun_up", interface=server.name) == 1
        assert _metric(after, "simpletun_info", interface=server.name,
                       transport=transport) == 1
        for name in ("simpletun_peer_receive_bytes_total",
                     "simpletun_peer_transmit_bytes_total",
                     "simpletun_peer_receive_packets_total",
                     "simpletun_peer_transmit_packets_total"):
            assert _metric(before, name, **labels) <= _metric(during, name, **labels) \
                <= _metric(after, name, **labels), name
        assert _metric(after, "simpletun_peer_receive_bytes_total", **labels) \
            - _metric(before, "simpletun_peer_receive_bytes_total", **labels) >= 4 << 20
        assert _metric(after, "simpletun_peer_transmit_bytes_total", **labels) >= 4 << 20
        assert 0 <= _metric(after, "simpletun_peer_latest_handshake_age_seconds",
                            **labels) < 60
        # show: wg show's layout and simpletun's lines; --json the same as numbers
        shown = server.run("show", server.name)
        assert shown.returncode == 0, shown.stderr
        for pattern in (rf"interface: {server.name}\n", rf"peer: {re.escape(cpub)}\n",
                        r"allowed ips: 10\.88\.0\.2/32\n",
                        r"latest handshake: (Now|\d+ seconds? ago)\n",
                        r"transfer: [\d.]+ MiB received, [\d.]+ MiB sent\n",
                        rf"transport: {transport}\n"):
            assert re.search(pattern, shown.stdout), (pattern, shown.stdout)
        as_json = json.loads(client.run("show", client.name, "--json").stdout)
        (tunnel,) = as_json if isinstance(as_json, list) else as_json["interfaces"]
        assert tunnel["transport"] == transport and tunnel["public_key"] == wghost.pubkey(ckey)
        (peer,) = tunnel["peers"]
        assert peer["public_key"] == spub and peer["allowed_ips"] == ["10.88.0.0/24"]
        assert peer["rx_bytes"] >= 4 << 20 and peer["tx_bytes"] >= 4 << 20
        assert time.time() - 60 < peer["latest_handshake"] <= time.time() + 1
        client.down()
        server.down()
        assert_gone(client)
        assert_gone(server)
        # the ICMP server gave the kernel its echo replies back
        assert srv.run(["sysctl", "-n", "net.ipv4.icmp_echo_ignore_all"]).stdout.strip() \
            == "0"


@pytest.mark.parametrize("wire", ["native", "classic"])
def test_the_plaintext_wires_from_files(lab: Lab, wire: str) -> None:
    """``Wire = native|classic``: no keys, a server (no Endpoint) and a client of it; pings,
    4 MB each way with sha256, show names the wire; SIGHUP with a changed file says it needs
    a restart; down after the engine was killed with SIGKILL (the supervisor notices)."""
    from simpletun.lab.netns import veth
    from simpletun.lab.testbed import transfer

    srv, cli = lab.host("ptsrv"), lab.host("ptcli")
    veth(srv, "eth0", cli, "eth0", a_addrs=["192.0.2.1/24"], b_addrs=["192.0.2.2/24"])
    server_text = (f"[Interface]\nWire = {wire}\nAddress = 10.89.0.1/24\nListenPort = 51850\n"
                   "PostUp = echo up >> %DIR/hooks\nPostDown = echo down >> %DIR/hooks\n")
    client_text = (f"[Interface]\nWire = {wire}\nAddress = 10.89.0.2/24\n\n[Peer]\n"
                   "Endpoint = 192.0.2.1:51850\nAllowedIPs = 10.89.9.0/24\n")
    with simpletun_up(srv, server_text) as server, simpletun_up(cli, client_text) as client:
        said = server.up()
        assert "warning: this tunnel is not encrypted" in said, said
        client.up()
        wait_until("the client's route", lambda: "10.89.9.0/24" in {
            str(n) for n in link.routes(client.name, netns=cli.name)}, timeout=10)
        assert ping(cli, "10.89.0.1", count=3)
        transfer(cli, srv, "10.89.0.1", 4 << 20, port=5013)
        transfer(srv, cli, "10.89.0.2", 4 << 20, port=5014)
        shown = server.run("show", server.name)
        assert re.search(rf"wire: {wire}\n", shown.stdout), shown.stdout
        server.write(server_text.replace("10.89.0.1/24", "10.89.0.3/24"))
        os.kill(server.state().supervisor.pid, signal.SIGHUP)
        log = os.path.join(state.STATE_DIR, f"{server.name}.log")
        wait_until("the reload is said", lambda: "no peers to change" in read(log))
        # the engine is killed: the supervisor takes the rest down by itself
        st = server.state()
        assert st.engine is not None
        os.kill(st.engine.pid, signal.SIGKILL)
        wait_until("the server's tunnel is down", lambda: not os.path.exists(st.path),
                   timeout=20)
        assert_gone(server)
        with open(os.path.join(server.dir, "hooks")) as f:
            assert f.read() == "up\ndown\n"
        client.down()
        assert_gone(client)


def test_save_config_writes_back_what_the_engine_has(setup: Setup) -> None:
    """``SaveConfig = true``: a peer added with ``wg set`` while it runs is in the file after
    ``down``, with the [Interface] as it was (hooks, Address, SaveConfig)."""
    s = setup
    endpoint = wghost.endpoint_of(s.peer.underlay4, s.go.listen_port or 0)
    other = wghost.pubkey(wghost.genkey())
    with simpletun_up(s.me.ns, config(s, "10.77.0.1/32", endpoint,
                                      "SaveConfig = true\nPostUp = true\n")) as u:
        os.chmod(u.path, 0o644)  # readable by all: said (as wg-quick says it), then fixed
        assert f"warning: {u.path} can be read by others (mode 644)" in u.up()
        assert ping(s.me.ns, "10.77.0.1", count=2)
        u.wg("set", u.name, "peer", other, "allowed-ips", "10.77.0.9/32,fd77::9/128")
        u.down()
        saved = wgconf.load(u.path)
        assert [keys.to_base64(p.public_key) for p in saved.peers] == [s.go.public_key, other]
        go, added = saved.peers
        assert go.endpoint == (s.peer.underlay4, s.go.listen_port)
        assert go.persistent_keepalive == 25
        assert [str(n) for n in added.allowed_ips] == ["10.77.0.9/32", "fd77::9/128"]
        assert saved.interface.save_config and saved.interface.post_up == ["true"]
        assert [str(a) for a in saved.interface.addresses] == ["10.77.0.2/24", "fd77::2/64"]
        assert oct(os.stat(u.path).st_mode & 0o777) == "0o600"


def test_the_metrics_endpoint_under_attack_from_a_third_host(lab: Lab) -> None:
    """Metrics on 0.0.0.0 (opt-in, but a listener on the network): from a third host on the
    switch, 40 connections held open, junk, an oversized header and a flood of requests.
    Connections beyond MAX_CONNECTIONS are closed at once, a silent one after
    REQUEST_TIMEOUT; the supervisor's threads stay bounded; the tunnel keeps moving; once
    the attacker lets go, a scrape is answered."""
    from simpletun.service.metrics import MAX_CONNECTIONS, REQUEST_TIMEOUT

    switch = wghost.Switch(lab)
    srv, cli, attacker = switch.join("msrv"), switch.join("mcli"), switch.join("mattack")
    skey, ckey = wghost.genkey(), wghost.genkey()
    server_text = (f"[Interface]\nPrivateKey = {skey}\nAddress = 10.87.0.1/24\n"
                   "ListenPort = 51860\nMetrics = 0.0.0.0:9586\n\n"
                   f"[Peer]\nPublicKey = {wghost.pubkey(ckey)}\nAllowedIPs = 10.87.0.2/32\n")
    client_text = (f"[Interface]\nPrivateKey = {ckey}\nAddress = 10.87.0.2/24\n\n[Peer]\n"
                   f"PublicKey = {wghost.pubkey(skey)}\nAllowedIPs = 10.87.0.0/24\n"
                   f"Endpoint = {srv.underlay4}:51860\n")
    attack = f"""
import socket, sys, time
target = ("{srv.underlay4}", 9586)
held = [socket.create_connection(target, timeout=3) for _ in range(40)]
time.sleep(0.5)
closed = 0
for s in held:
    s.settimeout(0.2)
    try:
        closed += s.recv(1) == b""
    except (TimeoutError, ConnectionResetError):
        pass
print("closed-at-once", closed)
for junk in (b"\\x00\\xff" * 600 + b"\\r\\n\\r\\n", b"GET / HTTP/1.1\\r\\nX: " + b"a" * 70000):
    with socket.create_connection(target, timeout=3) as s:
        s.sendall(junk)
time.sleep({REQUEST_TIMEOUT} + 1)
later = 0
for s in held:
    s.settimeout(0.2)
    try:
        later += s.recv(1) == b""
    except ConnectionResetError:
        later += 1
    except TimeoutError:
        pass
    s.close()
print("closed-at-once", closed, "closed-by-timeout", later)
"""
    with simpletun_up(srv.ns, server_text) as server, simpletun_up(cli.ns, client_text) as client:
        server.up()
        client.up()
        assert ping(cli.ns, "10.87.0.1", count=2)
        proc = attacker.ns.popen([sys.executable, "-c", attack], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        supervisor = server.state().supervisor.pid
        threads = privileges_threads(supervisor)
        assert threads <= 2 + MAX_CONNECTIONS, threads  # main, the server's, the slots
        assert ping(cli.ns, "10.87.0.1", count=5)  # the tunnel moves meanwhile
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        words = out.split()
        closed, later = int(words[words.index("closed-at-once") + 1]), int(words[-1])
        assert closed >= 40 - MAX_CONNECTIONS and later == 40, out
        scraped = _scrape(srv.ns, 9586)
        assert _metric(scraped, "simpletun_up", interface=server.name) == 1
        assert privileges_threads(supervisor) <= 3
        client.down()
        server.down()
        assert_gone(server)
        assert_gone(client)


def privileges_threads(pid: int) -> int:
    """How many threads ``pid`` has."""
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("Threads:")))
