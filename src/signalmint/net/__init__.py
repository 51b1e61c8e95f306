"""Outbound network safety shared by sources and channels: the SSRF guard (:mod:`.ssrf`) and its
twin in the socket layer for clients that dial by themselves (:mod:`.dial_guard`).

Importing this package imports none of its modules (so importing one module never loads its
siblings and their dependencies: start-up time); import each name from its module.
"""
