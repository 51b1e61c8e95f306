"""The tamper-evident track record: hashing a signal log (:mod:`.hashing`) and checking a running
instance's public chains from outside (:mod:`.remote`).

Importing this package imports none of its modules (so importing one module never loads its
siblings and their dependencies: start-up time); import each name from its module.
"""
