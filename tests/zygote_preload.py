"""What the test zygote (:mod:`tests.processes`) imports once, so no forked process imports it again.

Everything a ``signalmint`` process loads (``run`` in every role, ``migrate``, the demo, the report
steps), the plugins of every entry-point group, the drivers and what uvicorn loads lazily. The
forkserver imports this module last; it then moves what the imports made out of the garbage
collector's sight (``gc.freeze``), in every forked process (the web app's own collect-and-freeze at
start-up then scans only what it made).
"""

from __future__ import annotations

import gc
from importlib import import_module
from importlib.metadata import entry_points

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

import signalmint.billing.business_schedule
import signalmint.cli
import signalmint.delivery.runner
import signalmint.demo.mailcatcher
import signalmint.demo.seed
import signalmint.demo.shop
import signalmint.reports.scheduler
import signalmint.serve.process
import signalmint.serve.web
import signalmint.serve.wiring
import signalmint.store.migrate  # noqa: F401

PLUGIN_GROUPS = ("signalmint.sources", "signalmint.detectors", "signalmint.channels")

for _module in sorted({ep.module for group in PLUGIN_GROUPS for ep in entry_points(group=group)}):
    import_module(_module)

gc.collect()
gc.freeze()
