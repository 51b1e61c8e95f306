"""Fault injection for crash tests: an engine process SIGKILLs (or SIGSTOPs) itself at a chosen
signal, so a test can land a ``kill -9`` exactly before or after a given commit.

Read once from the environment when an engine starts; unset (always, outside tests) it does
nothing:

- ``SIGNALMINT_FAULT_KILL_BEFORE_SIGNAL=N``: die right before committing the tick that holds this
  process's N-th signal (nothing of that tick is stored);
- ``SIGNALMINT_FAULT_KILL_AFTER_SIGNAL=N``: die right after the commit that stored its N-th signal;
- ``SIGNALMINT_FAULT_KILL_AFTER_BARS=N``: die right after the commit that took the bars this process
  fed (over all its automations) to N or past it (a point in a backfill, whether or not it signals);
- ``SIGNALMINT_FAULT_PAUSE_BEFORE_SIGNAL=N``: stop (SIGSTOP) right before that commit, as a
  paused or zombie engine would; a test resumes it with SIGCONT once its lease was taken;
- ``SIGNALMINT_FAULT_START_GATE=PATH``: automations start reading their sources only once this
  file exists (a test lines several slow-starting processes up before the data flows).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Faults"]

PREFIX = "SIGNALMINT_FAULT_"


def _number(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(PREFIX + name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


@dataclass(slots=True)
class Faults:
    kill_before: int | None = None
    kill_after: int | None = None
    pause_before: int | None = None
    gate: str | None = None
    kill_after_bars: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Faults:
        env = os.environ if environ is None else environ
        return cls(_number(env, "KILL_BEFORE_SIGNAL"), _number(env, "KILL_AFTER_SIGNAL"),
                   _number(env, "PAUSE_BEFORE_SIGNAL"), env.get(PREFIX + "START_GATE") or None,
                   _number(env, "KILL_AFTER_BARS"))  # fmt: skip

    async def wait_for_gate(self) -> None:
        """Until the start gate's file exists (at once without a gate)."""
        while self.gate is not None and not os.path.exists(self.gate):
            await asyncio.sleep(0.02)

    def before_commit(self, attempted: int, adding: int) -> None:
        """About to commit ``adding`` signals after ``attempted`` were sent to be committed."""
        committed = attempted
        if not adding:
            return
        if self.kill_before is not None and committed < self.kill_before <= committed + adding:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.pause_before is not None and committed < self.pause_before <= committed + adding:
            self.pause_before = None  # once: after SIGCONT that commit is tried (and refused), not paused again
            os.kill(os.getpid(), signal.SIGSTOP)

    def after_commit(self, before: int, committed: int) -> None:
        """A commit took this process's signal count from ``before`` to ``committed``."""
        if self.kill_after is not None and before < self.kill_after <= committed:
            os.kill(os.getpid(), signal.SIGKILL)

    def after_bars(self, before: int, fed: int) -> None:
        """A commit took the bars this process fed from ``before`` to ``fed``."""
        if self.kill_after_bars is not None and before < self.kill_after_bars <= fed:
            os.kill(os.getpid(), signal.SIGKILL)
