"""Delivery: the durable outbox, its workers, and one channel module per service."""
