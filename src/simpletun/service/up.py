"""``simpletun up`` / ``down``: a tunnel from a config file, as wg-quick brings one up, and
taken down again exactly, also after a crash.

Two processes. The **supervisor** (the ``up`` process itself with ``--foreground``, the
main process of a systemd service; otherwise a daemon it leaves behind once the tunnel is
up) stays root and does every change: the device, PreUp, addresses, MTU, DNS, routes (a
full tunnel by policy routing, :mod:`simpletun.device.policy`), PostUp; each is written
down in the state file (:mod:`.state`) before it is made. The **engine** process (forked
once the device and the socket exist) configures the WireGuard engine from the file
(:mod:`simpletun.config.setconf`), drops to ``User``/``Group`` keeping only the
capabilities it still needs, says it is ready, and runs.

The supervisor then waits for signals: SIGHUP re-reads the file and applies its peer
changes through the engine's UAPI socket (sessions of peers that stay go on), SIGTERM/
SIGINT take the tunnel down (PreDown, the engine stopped with its summary, every change
undone in reverse, PostDown). An engine that ends by itself takes the tunnel down too.
``down`` asks the supervisor to do that; if the supervisor is gone (SIGKILL), ``down``
undoes the recorded changes itself.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache, partial
from typing import Any

from ..config import setconf, wgconf
from ..control import status, uapi_client
from ..device import isolate, link, policy, routing, tuntap
from ..errors import ConfigError, PermissionDenied, SimpletunError, TunnelState
from ..signals import STOP_SIGNALS
from ..tunnel import mtu as mtu_limits
from . import dns, engine_process, hooks, logs, notify, plan, state, undo
from .state import Process, State

DEFAULT_TCP_PORT = 51820

Log = Callable[[str], None]


def log(message: str) -> None:
    logs.log(message)


# --- up ----------------------------------------------------------------------------------

@dataclass
class Up:
    """One tunnel brought up from ``config``; :meth:`run` until it is taken down."""

    name: str
    config: wgconf.Config
    st: State
    out: Log = log
    engine: Process | None = None
    fwmark: int | None = None
    routes: plan.Routes = field(default_factory=plan.Routes)
    metrics: Any = None
    #: the file as brought up ([Interface] changes need a restart; peers follow reloads)
    loaded: wgconf.Config | None = None
    #: where lines go once the supervisor is in the background (None: stderr)
    log_path: str | None = None
    #: endpoint names to addresses, once for the whole bring-up: the engine's endpoint,
    #: the MTU's route and the host route kept to the server are to one address
    resolve: setconf.Resolve = plan.resolve
    _ready_r: int = -1

    def change(self, **change: Any) -> None:
        self.st.record(change)

    # ---- bringing it up
    def bring_up(self) -> None:
        it, name = self.config.interface, self.name
        hooks.run("PreUp", it.pre_up, name, self.out)
        if it.wire != "wireguard":
            self._bring_up_plaintext()
            return
        self.routes = plan.plan_routes(self.config)
        full_versions = sorted({int(n.version) for n in self.routes.full})
        if self.routes.full:  # the mark the engine's socket carries = the table
            self.fwmark = it.fwmark or isolate.in_child(policy.free_table)
        request = setconf.device_set(self.config, self.resolve, fwmark=self.fwmark)
        workers = it.workers or 1
        # made here, never taken over (a device of the same name made meanwhile is someone
        # else's): recorded once made, since until the engine holds it, it lives only as
        # long as this process
        dev = tuntap.open_device(name, tap=it.tap, vnet_hdr=not it.tap, exclusive=True,
                                 queues=workers, multi_queue=workers > 1)
        self.change(kind="device", name=name)
        self.change(kind="file", path=status.socket_path(name, status.WG_DIRECTORY))
        if self.log_path is not None:
            self.change(kind="file", path=self.log_path)
        try:
            transport = self._transport(dev.name)
            try:
                self.engine = self._fork_engine(partial(engine_process.main, dev, transport,
                                                        request, self.config, os.getpid()))
            finally:
                with contextlib.suppress(OSError):
                    transport.close()  # the engine's now
        finally:
            dev.close()  # the engine holds it: the device lives as long as the engine
        self.st.engine = self.engine
        self.st.save()
        self._wait_ready()
        mtu = it.mtu or self._auto_mtu()
        isolate.in_child(lambda: _address(name, it.addresses, mtu))
        self._dns()
        self._add_routes(full_versions)
        self._post_up()

    def _bring_up_plaintext(self) -> None:
        """The plaintext wire: the engine's process runs the classic/native tunnel, which
        makes and configures its device and routes its peer's AllowedIPs itself (and
        takes them away when it ends); up when the device is."""
        name = self.name
        self.change(kind="device", name=name)
        self.change(kind="file", path=status.socket_path(name, status.PLAIN_DIRECTORY))
        if self.log_path is not None:
            self.change(kind="file", path=self.log_path)
        self.engine = self._fork_engine(partial(engine_process.plaintext, self.config, name,
                                                  os.getpid()))
        self.st.engine = self.engine
        self.st.save()
        self._wait_device()
        self._dns()
        self._post_up()

    def _wait_device(self, wait: float = 20.0) -> None:
        """Until the plaintext tunnel's device is there, up, with its addresses; its lines
        so far (in the log, in the background) said here too."""
        it, name = self.config.interface, self.name
        wanted = {str(a) for a in it.addresses}

        def configured() -> bool:
            if not link.exists(name):
                return False
            return not wanted or (link.state(name).up
                                  and wanted <= {str(a) for a in link.addresses(name)})

        deadline = time.monotonic() + wait
        while True:
            ready, _, _ = select.select([self._ready_r], [], [], 0.05)
            if ready:
                self._wait_ready()  # raises: it said why, or ended
            if isolate.in_child(configured):
                break
            if time.monotonic() > deadline:
                raise SimpletunError(f"{name}: the tunnel's device was not up after {wait:g} s")
        os.close(self._ready_r)
        if self.log_path is not None:
            with contextlib.suppress(OSError), open(self.log_path, "rb") as f:
                sys.stderr.buffer.write(f.read())
                sys.stderr.flush()

    def _dns(self) -> None:
        it, name = self.config.interface, self.name
        if it.dns:  # search domains alone set nothing (as in wg-quick)
            if dns.available():
                record = dns.record_name(name)
                self.change(kind="dns", record=record)
                dns.set_servers(record, it.dns, it.dns_search)
            else:
                self.out("warning: DNS is set but resolvconf is not installed: the tunnel runs "
                         "without its DNS servers (apt-get install resolvconf)")

    def _post_up(self) -> None:
        it, name = self.config.interface, self.name
        hooks.run("PostUp", it.post_up, name, self.out)
        if it.metrics is not None:
            from . import metrics

            self.metrics = metrics.serve(*it.metrics, lambda: [name])

    def _transport(self, name: str) -> Any:
        """The engine's link, made here (a busy port fails before the engine runs)."""
        it = self.config.interface
        from ..transport import icmp, tcp, tcp_link

        endpoint = next((p.endpoint for p in self.config.peers if p.endpoint), None)
        if it.transport == "udp":
            return tcp.listen(it.listen_port or 0, kind=socket.SOCK_DGRAM)
        if it.transport == "tcp":
            if endpoint is not None:
                return tcp_link.client(*endpoint)
            return tcp_link.server(it.listen_port or DEFAULT_TCP_PORT)
        if endpoint is not None:
            client = icmp.Client(endpoint[0])
            client.polling = True
            return client
        server = icmp.Server()
        # put back by the process when it ends, and from its own note after a kill -9
        self.change(kind="icmp-echo", state=icmp.echo_state())
        server.answer_pings, _restore = icmp.quiet_kernel()
        return server

    def _fork_engine(self, main: Callable[[engine_process.Ready], int]) -> Process:
        """Fork the engine's process, which runs ``main``; the supervisor keeps the read end
        of its ready pipe (:meth:`_wait_ready`)."""
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            if self.log_path:  # in the background: its lines go where the supervisor's will
                _detach(self.log_path)
            ready = engine_process.Ready(ready_w)
            code = 1
            try:
                code = main(ready)
            except BaseException as exc:  # never a traceback: one line, and gone
                message = getattr(exc, "message", "") or str(exc) or type(exc).__name__
                with contextlib.suppress(Exception):
                    if not ready.failed(f"{self.name}: {message}"):
                        logs.error(f"simpletun: {self.name}: {message}")
            finally:
                os._exit(code)
        os.close(ready_w)
        self._ready_r = ready_r
        return Process.of(pid)

    def _wait_ready(self) -> None:
        with os.fdopen(self._ready_r, "rb") as r:
            said = r.read(1)  # the workers the engine forked hold the pipe too: no EOF
            if said == b"E":
                said += r.read()
        if said != b"R":
            assert self.engine is not None
            for _ in range(100):
                if undo.reap(self.engine.pid) is not None:
                    break
                time.sleep(0.01)
            raise SimpletunError(said[1:].decode(errors="replace") if said[:1] == b"E" else
                                 f"{self.name}: the engine ended before it was up")

    def _auto_mtu(self) -> int:
        """wg-quick's: the smallest underlay MTU towards the endpoints (or of the default
        route's device), less 80; over TCP and ICMP the transport's default."""
        it = self.config.interface
        if it.transport != "udp":
            return mtu_limits.default_mtu(it.transport, tap=it.tap) or 1500
        endpoints = [self.resolve(*p.endpoint)[0] for p in self.config.peers if p.endpoint]

        def underlay() -> int:
            found = [link.state(r.device).mtu for r in map(routing.underlay_route, endpoints)
                     if r is not None]
            if not found:  # no endpoint, or none with a route: the default route's device
                default = _default_route()
                found = [link.state(default.device).mtu] if default is not None else []
            return min(found, default=1500)

        return max(1280 if any(a.version == 6 for a in it.addresses) else 68,
                   isolate.in_child(underlay) - 80)

    def _add_routes(self, full_versions: list[int]) -> None:
        name, r = self.name, self.routes
        if r.main:
            isolate.in_child(lambda: routing.add_routes(r.main, name))
        if r.table is not None:
            table = r.table
            for net in r.in_table:
                isolate.in_child(partial(policy.add_table_route, net, name, table))
        if r.halves:
            ends = [self.resolve(*p.endpoint)[0] for p in self.config.peers if p.endpoint]
            for address in ends:
                route = isolate.in_child(partial(routing.underlay_route, address))
                if route is not None:
                    self.change(kind="host-route", route=asdict(route))
                    if isolate.in_child(partial(routing.keep_reachable, address)) is None:
                        self.st.forget()  # one was there already: someone else's
            isolate.in_child(lambda: routing.add_routes(r.halves, name))
        if not r.full:
            return
        assert self.fwmark is not None
        table = self.fwmark
        for net in r.full:
            top = isolate.in_child(partial(policy.first_priority, net.version))
            for rule in policy.rules(net.version, table, top):
                self.change(kind="rule", rule=rule.as_dict())
                isolate.in_child(partial(policy.add_rule, rule))
            isolate.in_child(partial(policy.add_table_route, net, name, table))
        if 4 in full_versions:
            # on, as wg-quick turns it on, and left on (as wg-quick does): another full
            # tunnel may stand on it by now
            with open("/proc/sys/net/ipv4/conf/all/src_valid_mark", "r+") as f:
                if f.read().strip() != "1":
                    f.seek(0)
                    f.write("1")
        if shutil.which("nft") is None:
            self.out("warning: nft is not installed: the full tunnel runs without wg-quick's "
                     "firewall rules (packets to its addresses from other devices are not "
                     "dropped); apt-get install nftables")
            return
        text, tables = policy.firewall(name, table, self.config.interface.addresses,
                                       full_versions)
        for t in tables:
            self.change(kind="nft", table=t)
        done = subprocess.run(["nft", "-f", "-"], input=text.encode(), capture_output=True,
                              check=False, preexec_fn=hooks.unblock)
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip().splitlines() or ["failed"]
            self.out(f"warning: nft refused the full tunnel's firewall rules: {why[-1]}")

    # ---- running
    def run(self) -> int:
        """Wait for signals and the engine; take the tunnel down; the exit status."""
        assert self.engine is not None
        waited = {signal.SIGHUP, signal.SIGCHLD, *STOP_SIGNALS}
        code = 0
        while True:
            info = signal.sigtimedwait(waited, 1.0)
            if info is not None and info.si_signo in set(STOP_SIGNALS) - {signal.SIGHUP}:
                self.out(f"{self.name}: {signal.Signals(info.si_signo).name}: taking the "
                         "tunnel down")
                break
            ended = undo.reap(self.engine.pid)
            if ended is not None or not self.engine.alive():
                self.out(f"{self.name}: the engine ended (exit status {ended}): taking the "
                         "tunnel down")
                code = 1
                break
            if info is None or info.si_signo == signal.SIGCHLD:
                continue
            if info.si_signo == signal.SIGHUP:
                notify.notify("RELOADING=1",
                              f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC)//1000}")
                self.reload()
                notify.notify("READY=1", f"STATUS={self._status()}")
        self.take_down()
        return code

    def _status(self) -> str:
        n = len(self.config.peers)
        return f"{self.name} up, {n} peer{'s' if n != 1 else ''}"

    def reload(self) -> None:
        """SIGHUP: the file again; its peer changes applied without touching the others."""
        try:
            new = wgconf.load(self.config.path)
            plan.check(new)
            if new.interface.wire != "wireguard" or self.config.interface.wire != "wireguard":
                if new != self.config:
                    self.out(f"reload: {new.path} changed, but the plaintext wire has no "
                             "peers to change while it runs: restart the tunnel for that "
                             f"(simpletun down/up {self.name})")
                return
            request = setconf.sync(self.config, new, plan.resolve)
        except SimpletunError as exc:
            self.out(f"reload: {exc}; still running the previous configuration")
            return
        if request.peers:
            try:
                uapi_client.request(self.name, setconf.format_set(request))
            except SimpletunError as exc:
                self.out(f"reload: the engine refused the new peers ({exc}); still running "
                         "the previous configuration")
                return
        old_routes, self.config = self.routes, new
        self.routes = plan.plan_routes(new)
        self._reroute(old_routes, self.routes)
        added = sum(1 for p in request.peers if not p.remove)
        removed = sum(1 for p in request.peers if p.remove)
        self.out(f"reloaded {new.path}: {removed} peer{'s' if removed != 1 else ''} removed, "
                 f"{added} added or changed, {len(new.peers)} in all")
        skipped = setconf.changed_interface(self.loaded or new, new)
        if skipped:
            self.out(f"reload: {', '.join(skipped)} changed in {new.path}: not applied by a "
                     f"reload; restart the tunnel for that (simpletun down/up {self.name})")

    def _reroute(self, old: plan.Routes, new: plan.Routes) -> None:
        name = self.name
        gone = [n for n in old.main if n not in new.main]
        added = [n for n in new.main if n not in old.main]
        try:
            if gone:
                isolate.in_child(lambda: routing.remove_routes(gone, name))
            if added:
                isolate.in_child(lambda: routing.add_routes(added, name))
        except SimpletunError as exc:
            self.out(f"reload: the routes of the new allowed IPs: {exc}")
        if (old.full, old.halves, old.in_table) != (new.full, new.halves, new.in_table):
            self.out("reload: the full-tunnel or Table routes changed: not applied by a "
                     f"reload; restart the tunnel for that (simpletun down/up {self.name})")

    # ---- taking it down
    def take_down(self) -> None:
        notify.notify("STOPPING=1")
        it = self.config.interface
        if self.metrics is not None:
            self.metrics.close()
        hooks.run("PreDown", it.pre_down, self.name, self.out, strict=False)
        if it.save_config:
            self._save_config()
        undo.stop_process(self.engine)
        undo.undo_all(self.st, self.out)
        hooks.run("PostDown", it.post_down, self.name, self.out, strict=False)
        self.st.remove()

    def _save_config(self) -> None:
        """SaveConfig: the file written again from what the engine has now (its peers, their
        endpoints and allowed IPs), the [Interface] as it was."""
        try:
            answer = status.exchange(status.socket_path(self.name, status.WG_DIRECTORY),
                                     "get=1\n\n")
        except SimpletunError as exc:
            self.out(f"warning: SaveConfig: {exc}: {self.config.path} left as it was")
            return
        peers = plan.peers_from_status(status.parse_get(answer))
        saved = wgconf.Config(self.config.path, self.config.interface, peers)
        tmp = f"{self.config.path}.tmp"
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(wgconf.render(saved))
            os.replace(tmp, self.config.path)
        except OSError as exc:
            self.out(f"warning: SaveConfig: cannot write {self.config.path}: {exc.strerror}")


def _default_route() -> routing.HostRoute | None:
    """Where the default route leaves (wg-quick's MTU without endpoints)."""
    return routing.underlay_route("0.0.0.0") or routing.underlay_route("1.0.0.0")


def _address(name: str, addresses: list[link.IPInterface], mtu: int) -> None:
    from ..cli._common import configure

    configure(name, addresses, mtu=mtu, up=True)


# --- the commands ------------------------------------------------------------------------

def up(arg: str, *, foreground: bool = False, config_dir: str = plan.CONFIG_DIR,
       state_dir: str = state.STATE_DIR) -> int:
    """``simpletun up``: checked before anything changes; then, unless ``foreground``,
    the supervisor goes to the background once the tunnel is up (its lines go to
    ``STATE_DIR/NAME.log``), and this returns 0."""
    _need_root("up")
    name, path = plan.locate(arg, config_dir)
    config = wgconf.load(path)
    plan.check(config)
    plan.check_user(config)
    warning = plan.exposed(path) if config.interface.private_key is not None else None
    if warning is not None:
        log(warning)
    resolve = cache(plan.resolve)
    for p in config.peers:
        if p.endpoint is not None:
            resolve(*p.endpoint)  # a name that does not resolve fails before any change
    old = state.load(name, state_dir)
    if old is not None:
        if old.supervisor.alive():
            raise TunnelState(f"{name} is up already (pid {old.supervisor.pid}): take it down "
                              f"first (simpletun down {name})")
        log(f"{name}: its last run ended without taking it down (killed?): undoing what it "
            "left first")
        undo.finish(old, log)
    if isolate.in_child(lambda: link.exists(name)):
        raise TunnelState(f"{name} exists already: pick another name, or remove it "
                          f"(ip link del {name})")
    if config.interface.metrics is not None:
        _check_metrics(config.interface.metrics)
    if not foreground:
        parent = _daemonize()
        if parent is not None:
            return parent
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGCHLD,
                                                     *STOP_SIGNALS})
    st = State(name, os.path.abspath(path), Process.me(), pre_down=config.interface.pre_down,
               post_down=config.interface.post_down, directory=state_dir)
    try:
        st.create()  # exclusively: two ups of one name, one goes on
    except FileExistsError:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        raise TunnelState(f"{name} is being brought up by another 'simpletun up' already"
                          ) from None
    log_path = None if foreground else os.path.join(state_dir, f"{name}.log")
    tunnel = Up(name, config, st, loaded=config, log_path=log_path, resolve=resolve)
    try:
        tunnel.bring_up()
    except BaseException:
        if tunnel.metrics is not None:
            tunnel.metrics.close()
        undo.stop_process(tunnel.engine)
        undo.undo_all(st, log)
        st.remove()
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        raise
    n = len(config.peers)
    log(f"{name} up: {config.interface.transport.upper()}, {n} peer{'s' if n != 1 else ''}"
        + (f", as {config.interface.user}" if config.interface.user else "")
        + ("" if foreground else f"; lines go to {os.path.join(state_dir, name + '.log')}"))
    notify.notify("READY=1", f"STATUS={tunnel._status()}", f"MAINPID={os.getpid()}")
    if log_path is not None:
        sys.stderr.flush()
        with contextlib.suppress(OSError):  # the caller may be gone (Ctrl-C): up anyway
            os.write(2, UP_MARK)
        _detach(log_path)
    try:
        return tunnel.run()
    except BaseException:
        with contextlib.suppress(BaseException):
            tunnel.take_down()  # whatever went wrong, nothing is left behind
        raise


def _need_root(command: str) -> None:
    if os.geteuid() != 0:
        raise PermissionDenied(f"simpletun {command} changes devices, routes and /run: run it "
                               "as root (sudo)")


def _check_metrics(where: tuple[str, int]) -> None:
    try:
        with socket.create_server(where, family=socket.AF_INET6 if ":" in where[0]
                                  else socket.AF_INET):
            pass
    except OSError as exc:
        raise ConfigError(f"Metrics {where[0]}:{where[1]}: cannot listen there "
                          f"({exc.strerror})") from None


#: the supervisor's last word on the pipe its ``up`` reads: the tunnel is up
UP_MARK = b"\0simpletun-up\n"


def _daemonize() -> int | None:
    """Fork the supervisor into the background. In the caller: every line the supervisor
    writes is copied to stderr until it says the tunnel is up (:data:`UP_MARK`: 0 is
    returned) or ends (its exit status). In the supervisor: None."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r, "rb") as lines:
            pending = b""
            for chunk in iter(lambda: lines.read1(65536), b""):
                pending += chunk
                if UP_MARK in pending:  # up: whatever holds the pipe now (a PostUp's
                    sys.stderr.buffer.write(pending.split(UP_MARK)[0])  # daemon) is not
                    sys.stderr.flush()                                  # waited for
                    return 0
                keep = len(UP_MARK) - 1  # a mark cut between two reads
                sys.stderr.buffer.write(pending[:-keep])
                sys.stderr.flush()
                pending = pending[-keep:]
            sys.stderr.buffer.write(pending)
            sys.stderr.flush()
        _pid, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) or 1
    os.close(r)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(w, 1)
    os.dup2(w, 2)
    os.close(devnull)
    os.close(w)
    return None


def _detach(log_path: str) -> None:
    """The supervisor's lines go to ``log_path`` from now on (the caller stops waiting)."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def down(arg: str, *, config_dir: str = plan.CONFIG_DIR, state_dir: str = state.STATE_DIR) -> int:
    """``simpletun down``: the supervisor asked to take the tunnel down, and waited for; if
    it is gone, what it recorded is undone here."""
    _need_root("down")
    name, _path = plan.locate(arg, config_dir)
    st = state.load(name, state_dir)
    if st is None:
        if isolate.in_child(lambda: link.exists(name)):
            raise TunnelState(f"{name} was not brought up by 'simpletun up' (no "
                              f"{state.path(name, state_dir)}): stop the program that holds it")
        raise TunnelState(f"{name} is not up")
    if st.supervisor.alive():
        # what the tunnel says while it goes (PreDown, its summary) is said here too: its
        # log (in the background) is read from its end now, before it is removed
        with contextlib.ExitStack() as stack:
            try:
                said = stack.enter_context(open(os.path.join(state_dir, f"{name}.log"), "rb"))
                said.seek(0, os.SEEK_END)
            except OSError:
                said = None  # a foreground tunnel: its lines go to its own stderr
            os.kill(st.supervisor.pid, signal.SIGTERM)
            deadline = time.monotonic() + undo.STOP_WAIT + 10
            while st.supervisor.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if said is not None:
                sys.stderr.buffer.write(said.read())
                sys.stderr.flush()
        if not st.supervisor.alive() and state.load(name, state_dir) is None:
            log(f"{name} down")
            return 0
        if st.supervisor.alive():  # stuck: it goes, so that nothing is undone twice
            log(f"{name}: the tunnel (pid {st.supervisor.pid}) did not end in time: killing "
                "it and undoing the rest")
            undo.stop_process(st.supervisor, wait=0)
        st = state.load(name, state_dir) or st
    else:
        log(f"{name}: its tunnel (pid {st.supervisor.pid}) is gone: undoing what it set up")
    undo.finish(st, log)
    log(f"{name} down")
    return 0


__all__ = ["Up", "down", "up"]
