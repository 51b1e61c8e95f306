"""Processes of the real ``signalmint`` CLI, forked from a warm parent instead of started cold.

A cold ``python -m signalmint.cli run`` spends about 2 s of CPU importing before it does anything,
and the scale-out tests start dozens of them (7 hosts and their restarts in the multi-host test
alone): on a 2-core machine most of their time went into imports. Here a multiprocessing
*forkserver* imports the CLI and what ``signalmint run`` / ``signalmint migrate`` load (this
module's imports) once per test process, and every process is forked from it. Each is still a
separate OS process with its own pid, running :data:`signalmint.cli.app` on its own argument
list, its own environment and working directory, stdout and stderr to its own log file, and,
when asked, inside a network namespace (``setns``, as ``ip netns exec`` does): ``kill -9``,
SIGSTOP, SIGTERM and its exit status are those of any process. What it does not repeat is the
import, which ``tests/test_cli.py`` covers with cold ``python -m signalmint.cli`` processes.

:func:`start_cli` runs the CLI; :func:`start_call` runs a function of a test module (the
multi-host test's webhook receiver and egress relays). Both return a :class:`Child`, which
answers the part of :class:`subprocess.Popen` the tests use (``pid``, ``poll``, ``wait``,
``send_signal``, ``terminate``, ``kill``, ``returncode``).
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

# What a forked process would otherwise import itself (``signalmint run`` and ``migrate``, the plugins
# and drivers the tests configure, what uvicorn loads lazily): loaded once, in the forkserver.
import alembic.command  # noqa: F401
import numpy.random  # noqa: F401
import psycopg  # noqa: F401
import rich._emoji_codes  # noqa: F401
import sqlalchemy.dialects.postgresql.psycopg
import sqlalchemy.dialects.sqlite.pysqlite  # noqa: F401
import uvicorn.lifespan.on
import uvicorn.protocols.http.auto
import uvicorn.protocols.websockets.auto  # noqa: F401
import uvloop  # noqa: F401

import signalmint.delivery.channels.webhook
import signalmint.detectors.volume_spike
import signalmint.serve.process
import signalmint.sources.file
import signalmint.sources.synthetic  # noqa: F401
from signalmint import cli

gc.collect()  # what the imports made is moved out of the collectors' sight, in every forked process
gc.freeze()  # (the web app's own collect-and-freeze at start-up then scans only what it made)

__all__ = ["Child", "start_call", "start_cli"]

_LIBC = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_CONTEXT = multiprocessing.get_context("forkserver")
# The forkserver imports this module, hence all of the above. A forked process runs the test
# runner's main script again as ``__mp_main__`` (multiprocessing's way): pytest's, which only
# imports pytest, preloaded too.
_CONTEXT.set_forkserver_preload([__name__, "pytest"])


class Child:
    """A forked process, with the part of :class:`subprocess.Popen` the tests use."""

    def __init__(self, process: BaseProcess, args: Sequence[str]) -> None:
        self._process = process
        self.args = list(args)
        assert process.pid is not None
        self.pid: int = process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self._process.exitcode is None:  # not reaped yet: the pid is still this process's
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start_cli(
    args: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, netns: str | None = None
) -> Child:
    """``signalmint ARGS`` in a process of its own, output appended to ``log``; ``env`` (default:
    this process's environment now) replaces its environment; ``netns`` names the network namespace
    (as ``ip netns add`` made it) it runs in."""
    return _start(_run_cli, (list(args),), log, env, netns, ["signalmint", *args])


def start_call(target: Callable[..., object], args: Sequence[Any], log: Path, *, netns: str | None = None) -> Child:
    """``target(*args)`` (a module-level function) in a process of its own, as :func:`start_cli` does."""
    return _start(target, tuple(args), log, None, netns, [f"{target.__module__}.{target.__qualname__}"])


def _start(
    target: Callable[..., object],
    args: tuple[Any, ...],
    log: Path,
    env: Mapping[str, str] | None,
    netns: str | None,
    shown: list[str],
) -> Child:
    environ = dict(os.environ if env is None else env)
    process = _CONTEXT.Process(
        target=_child, args=(target, args, str(log), environ, os.getcwd(), netns), name=shown[0], daemon=True
    )
    process.start()
    return Child(process, shown)


def _child(
    target: Callable[..., object],
    args: tuple[Any, ...],
    log: str,
    environ: dict[str, str],
    cwd: str,
    netns: str | None,
) -> None:
    """In the forked process: die with the forkserver (hence with the test process), enter the
    namespace, take the environment, directory and log file, then run ``target``."""
    if _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() == 1:  # the forkserver died before the prctl
        os._exit(1)
    if netns is not None:
        fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
        if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({netns})")
        os.close(fd)
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
    target(*args)


def _run_cli(args: list[str]) -> None:
    """As ``python -m signalmint.cli ARGS``: click exits with the command's status."""
    sys.argv = ["signalmint", *args]
    cli.main()
