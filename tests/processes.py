"""Real `signalmint` processes for tests, without paying the interpreter's start-up each time.

``start(["run", "-c", path, "--role", "worker"])`` runs the ``signalmint`` command in a new OS
process, like ``subprocess.Popen([sys.executable, "-m", "signalmint.cli", ...])``: its own pid
(``kill -9`` it, SIGTERM it, read its exit status), its own environment, its own event loop and
database connections, its output in a file. The one difference: it is forked from a zygote (a
multiprocessing fork server, one per test process) that imported the package, its web stack and
its plugins once, so a process starts in some 0.1 s instead of spending 2 s of CPU importing
(the suite starts dozens). What runs in it is the real ``signalmint.cli.main()`` with the
given arguments.

``call(function, *args)`` runs a module-level function of a test module the same way (a child
process that ``python -c`` would otherwise have run).

A few tests (tests/test_cli.py) still start ``python -m signalmint.cli`` itself, so the command
line as a user types it stays covered.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import io
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext, ForkServerProcess
from pathlib import Path
from typing import Any

__all__ = ["Started", "call", "start"]

# The forkserver imports the test runner's main script (multiprocessing's way) and tests.zygote_preload.
PRELOAD = ["__main__", "tests.zygote_preload"]
_LIBC = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1

_context: ForkServerContext | None = None
_running: list[Started] = []


def _zygote() -> ForkServerContext:
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        atexit.register(_stop)
        _context = context
    return _context


def _stop() -> None:
    """At exit: kill what a failed test left running, then stop the zygote (and wait for it)."""
    for started in _running:
        if started.poll() is None:
            started.kill()
            started.wait(10)
    server = getattr(forkserver, "_forkserver", None)
    with contextlib.suppress(Exception):
        server._stop()  # type: ignore[union-attr]  # (the stdlib's own tests stop it so)


def warm_up() -> None:
    """Start the zygote now (it imports in the background while the caller goes on)."""
    _zygote()
    forkserver.ensure_running()


def _redirect(output: str | None) -> None:
    """In the child: stdin from /dev/null, stdout and stderr (unbuffered) to ``output``."""
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    out = os.open(output or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = io.TextIOWrapper(
            io.FileIO(fd, "w", closefd=False),  # raw, as python -u
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=True,
            write_through=True,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _enter(env: dict[str, str], output: str | None, cwd: str, netns: str | None) -> None:
    """In the forked process: die with the zygote (hence with the test process), enter the network
    namespace (as ``ip netns exec`` does), take the environment, directory and output file, and the
    default signal handlers."""
    if _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() == 1:  # the zygote died before the prctl
        os._exit(1)
    if netns is not None:
        fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
        if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({netns})")
        os.close(fd)
    _redirect(output)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _child(argv: list[str], env: dict[str, str], output: str | None, cwd: str, netns: str | None) -> None:
    _enter(env, output, cwd, netns)
    sys.argv = ["signalmint", *argv]
    import_module("signalmint.cli").main()


def _call(
    module: str, name: str, args: tuple[Any, ...], env: dict[str, str], output: str | None, cwd: str, netns: str | None
) -> None:
    _enter(env, output, cwd, netns)
    getattr(import_module(module), name)(*args)


class Started:
    """A started process, with the part of :class:`subprocess.Popen` the tests use."""

    def __init__(self, process: ForkServerProcess, args: list[str], output: Path | None) -> None:
        self._process = process
        self.args = args
        self.output = output
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
        if self.poll() is None:  # (never signal a pid that may have been reused)
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def read_output(self) -> str:
        return self.output.read_text(errors="backslashreplace") if self.output and self.output.exists() else ""

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        """Wait for the exit; its output so far (stdout and stderr together, as STDOUT)."""
        self.wait(timeout)
        return self.read_output(), None


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"} if env is None else {**env}


def start(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    output: Path | None = None,
    netns: str | None = None,
) -> Started:
    """``signalmint ARGV`` in a new process; ``env`` is its whole environment (default: ours),
    ``output`` the file its stdout and stderr are appended to (default: /dev/null), ``netns`` the
    network namespace (as ``ip netns add`` made it) it runs in (default: ours)."""
    args = [str(a) for a in argv]
    child_args = (args, _env(env), str(output) if output else None, os.getcwd(), netns)
    process = _zygote().Process(target=_child, args=child_args, daemon=True, name="signalmint")
    return _started(process, ["signalmint", *args], output)


def call(
    function: Callable[..., object],
    *args: Any,
    env: Mapping[str, str] | None = None,
    output: Path | None = None,
    netns: str | None = None,
) -> Started:
    """``function(*args)`` (a module-level function) in a new process, as :func:`start`."""
    where = (function.__module__, function.__qualname__, args)
    process = _zygote().Process(
        target=_call,
        args=(*where, _env(env), str(output) if output else None, os.getcwd(), netns),
        daemon=True,
        name=function.__qualname__,
    )
    return _started(process, [function.__qualname__, *map(str, args)], output)


def _started(process: ForkServerProcess, args: list[str], output: Path | None) -> Started:
    process.start()
    started = Started(process, args, output)
    _running[:] = [*(s for s in _running if s.poll() is None), started]
    return started
