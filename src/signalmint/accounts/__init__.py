"""Accounts: sign-up, sign-in, sessions and API keys, the operator's tools over them, and the mail they send.

:mod:`.service` runs the flows over the store; :mod:`.credentials` hashes and checks every secret;
:mod:`.admin` is what an operator does to subscribers; :mod:`.mail` sends the account and billing email.

Importing this package imports none of its modules (so importing one module never loads its
siblings and their dependencies: start-up time); import each name from its module.
"""
