"""The engine: one task per automation from source to committed signals (:mod:`.runner`), with its
guardrails on the data (:mod:`.freshness`, :mod:`.watchdog`), the outcomes it measures after each
signal (:mod:`.outcomes`), the wake-ups live pages wait on (:mod:`.hub`) and the process's metrics
(:mod:`.metrics`).

The engine knows nothing of delivery: whoever runs it (:mod:`signalmint.serve`) hands it an
on-commit hook (the fan-out) and the operator's alert sender.

Importing this package imports none of its modules (so importing one module never loads its
siblings and their dependencies: start-up time); import each name from its module.
"""
