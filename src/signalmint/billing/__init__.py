"""Billing: payment providers (stripe, local test mode, manual), credits, revenue.

:func:`~.providers.make_provider` picks the provider the settings name; :class:`~.service.Billing`
starts checkouts with it, and every provider drives the same state machine
(:func:`~.core.converge`).

Importing this package imports none of its modules (so importing one module never loads its
siblings and their dependencies, such as the Stripe SDK: start-up time); import each name from
its module.
"""
