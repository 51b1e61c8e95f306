"""Processes on the multi-host test's hosts: started (forked from a warm parent, :mod:`tests.processes`),
killed with SIGKILL, stopped, waited for; and an SSE client that follows one web replica's stream,
reconnecting with ``Last-Event-ID``."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .. import processes

__all__ = ["Proc", "SseClient", "stop_all", "wait_http", "wait_log"]


@dataclass
class Proc:
    """``signalmint ARGS`` (or ``target(*args)``) on one host: inside the network namespace ``netns``;
    it dies with the test process (PR_SET_PDEATHSIG, so a timeout's os._exit leaves no orphans)."""

    name: str  # the host (namespace) it runs on
    args: list[Any]  # the CLI's (strings), or target's
    log: Path
    netns: str | None = None
    target: Callable[..., object] | None = None
    env: dict[str, str] | None = None  # its whole environment (default: the test process's)
    popen: processes.Started | None = None
    kills: int = 0

    def start(self) -> None:
        if self.target is None:
            self.popen = processes.start(self.args, env=self.env, output=self.log, netns=self.netns)
        else:
            self.popen = processes.call(self.target, *self.args, env=self.env, output=self.log, netns=self.netns)

    def kill9(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        assert self.popen.wait(10) == -signal.SIGKILL, f"{self.name} was not running when killed:\n{self.tail()}"
        self.kills += 1

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def stop_all(procs: list[Proc], seconds: float = 20) -> None:
    """SIGTERM to all at once, then SIGKILL to whatever still runs after ``seconds``."""
    running = [p.popen for p in procs if p.popen is not None and p.popen.poll() is None]
    for popen in running:
        popen.terminate()
    deadline = time.monotonic() + seconds
    for popen in running:
        try:
            popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def wait_http(url: str, proc: Proc, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.popen is not None and proc.popen.poll() is None, f"{proc.name} exited:\n{proc.tail()}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{proc.name} did not answer {url} in {seconds:g} s:\n{proc.tail()}")


def wait_log(proc: Proc, word: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while word not in proc.tail():
        assert proc.popen is not None and proc.popen.poll() is None, f"{proc.name} exited:\n{proc.tail()}"
        assert time.monotonic() < deadline, f"{proc.name} did not say {word!r} in {seconds:g} s:\n{proc.tail()}"
        time.sleep(0.1)


# --- SSE clients --------------------------------------------------------------------------------


@dataclass
class SseClient:
    """Reads ``/api/v1/stream`` of one web replica, reconnecting with ``Last-Event-ID``."""

    url: str
    key: str
    seen: set[int] = field(default_factory=set)
    connects: int = 0
    trouble: list[str] = field(default_factory=list)  # the last few refusals and errors, for a failure's message
    last_id: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    connected: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(5.0, read=20.0)) as client:  # pings come every 15 s
            while not self.stop.is_set():
                headers = {"Authorization": f"Bearer {self.key}"}
                if self.last_id is not None:
                    headers["Last-Event-ID"] = self.last_id
                try:
                    with client.stream("GET", self.url, headers=headers) as response:
                        if response.status_code != 200:
                            self.trouble = [*self.trouble[-4:], f"{response.status_code}: {response.read()[:200]!r}"]
                            time.sleep(0.2)
                            continue
                        self.connects += 1
                        self.connected.set()
                        fields: dict[str, str] = {}
                        for line in response.iter_lines():
                            if line:  # a field of the event being read (id, event, data, in any order)
                                name, _, value = line.partition(":")
                                fields[name] = value.strip()
                                continue
                            if fields.get("event") == "signal" and "id" in fields:  # a blank line ends it
                                self.last_id = fields["id"]
                                self.seen.add(int(self.last_id))
                            fields = {}
                            if self.stop.is_set():
                                return
                except httpx.HTTPError as exc:  # the replica died (or is quiet): connect again
                    self.trouble = [*self.trouble[-4:], repr(exc)]
                    time.sleep(0.2)
