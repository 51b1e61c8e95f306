"""The demo: bundled data and accounts (:mod:`.seed`), a local shop and news feed to read
(:mod:`.shop`) and a local SMTP server whose mail the web app shows (:mod:`.mailcatcher`).

Importing this package imports none of its modules (so importing one module never loads its
siblings and their dependencies: start-up time); import each name from its module.
"""
