"""Hosts for the multi-host test: Linux network namespaces on one bridge, and PostgreSQL reachable from them.

:class:`Fabric` makes a bridge in the root namespace (``10.X.Y.1/24``) and one namespace per
host, each joined to the bridge by a veth pair and given ``10.X.Y.N``; the hosts reach one
another and the root namespace through the bridge and nothing else. Every name carries this
process's id (``smx<pid>a``), so parallel runs do not clash, and a run finds and removes what a
killed earlier run left behind. :class:`TcpProxy` forwards a port on the bridge address to
``127.0.0.1`` (PostgreSQL listens there only), in a thread of the test process.

:func:`run_relay` (or ``python netns.py LISTEN_HOST PORT TARGET_HOST TARGET_PORT``) is the same
forwarder as a process's whole work: the multi-host test runs one inside each worker's namespace
as its egress relay, on 127.0.0.1, because the delivery SSRF guard lets
``delivery.allow_loopback_targets`` reach loopback addresses but never private ones such as
the bridge's ``10.X.Y.N``.

:func:`unavailable` says why namespaces cannot be made here (not root, no ``ip``, no
CAP_NET_ADMIN), or None.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Sequence

__all__ = ["Fabric", "TcpProxy", "unavailable"]

PREFIX = "smx"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _batch(commands: Sequence[str], namespace: str | None = None) -> None:
    """``ip -batch``: the commands, one a line, in one process (in ``namespace`` if given); stops at the first error."""
    where = ["-n", namespace] if namespace else []
    done = subprocess.run(["ip", *where, "-batch", "-"], input="\n".join(commands) + "\n", capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (CI runs as root; run `sudo -E uv run pytest tests/scaleout`)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing: apt-get install -y iproute2"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed (no CAP_NET_ADMIN in this container?): {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(namespace: str) -> None:
    """SIGKILL every process in ``namespace``: a namespace with a process left lives on, veth and all."""
    for pid in _ip("netns", "pids", namespace, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)


def sweep_leftovers() -> None:
    """Remove namespaces and bridges an earlier, killed run of this harness left behind."""
    listed = _ip("netns", "list", check=False).stdout.split()
    for name in listed:
        found = re.fullmatch(rf"{PREFIX}(\d+)[a-z]-.*", name)
        if found and not _alive(int(found.group(1))):
            _kill_inside(name)
            _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        found = re.search(rf"\d+: ({PREFIX}(\d+)[a-z]b)[:@]", line)
        if found and not _alive(int(found.group(2))):
            _ip("link", "del", found.group(1), check=False)


class Fabric:
    """Namespaces ``smx<pid><n>-<host>`` on the bridge ``smx<pid><n>b``, addresses ``10.X.Y.2`` and up
    (``<n>`` a letter per fabric this process made, so one made after another never meets its leftovers)."""

    made_here = 0

    def __init__(self, hosts: Sequence[str]) -> None:
        pid = os.getpid()
        self.token = f"{PREFIX}{pid}{'abcdefghijklmnopqrstuvwxyz'[Fabric.made_here % 26]}"
        Fabric.made_here += 1
        self.subnet = f"10.{200 + pid % 50}.{pid // 50 % 250}"
        self.bridge = f"{self.token}b"
        self.gateway = f"{self.subnet}.1"
        self.hosts = list(hosts)
        self.address = {host: f"{self.subnet}.{i + 2}" for i, host in enumerate(self.hosts)}
        self.made: list[str] = []

    def namespace(self, host: str) -> str:
        return f"{self.token}-{host}"

    def up(self) -> None:
        """The bridge and every host, in one ``ip -batch`` in the root namespace and one in each host."""
        sweep_leftovers()
        self.made = [self.bridge, *(self.namespace(host) for host in self.hosts)]  # down() tolerates the unmade
        try:
            root = [f"link add {self.bridge} type bridge", f"addr add {self.gateway}/24 dev {self.bridge}",
                    f"link set {self.bridge} up"]  # fmt: skip
            for i, host in enumerate(self.hosts):
                ns, outside = self.namespace(host), f"{self.token}h{i}"
                root += [f"netns add {ns}", f"link add {outside} type veth peer name eth0 netns {ns}",
                         f"link set {outside} master {self.bridge}", f"link set {outside} up"]  # fmt: skip
            _batch(root)
            for host in self.hosts:
                _batch(["link set lo up", f"addr add {self.address[host]}/24 dev eth0", "link set eth0 up"],
                       self.namespace(host))  # fmt: skip
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Kill what still runs in each namespace, delete the namespaces (their veth ends go with them)
        and the bridge; never raises."""
        for name in reversed(self.made):
            if name == self.bridge:
                _ip("link", "del", name, check=False)
            else:
                _kill_inside(name)
                _ip("netns", "del", name, check=False)
        self.made.clear()

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace (``ip netns exec`` execs it: its pid is the program's)."""
        return ["ip", "netns", "exec", self.namespace(host), *argv]


class TcpProxy:
    """Forwards ``listen_host:port`` to ``target_host:target_port``, on an event loop in its own thread."""

    def __init__(self, listen_host: str, port: int, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.listen_host, self.port = listen_host, port
        self.target_host, self.target_port = target_host, target_port
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pg-proxy", daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._server = self.loop.run_until_complete(
                asyncio.start_server(self._client, self.listen_host, self.port, reuse_address=True)
            )
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def run_relay(host: str, port: int, target_host: str, target_port: int) -> None:
    """The forwarder as a process's whole work: says ``relaying`` once it listens, then forwards until killed."""
    with TcpProxy(host, port, target_port, target_host) as proxy:
        print("relaying", flush=True)
        proxy._thread.join()


if __name__ == "__main__":
    import sys

    run_relay(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
