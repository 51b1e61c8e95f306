"""Channels: one file per service, each configured by a URL (like an Apprise plugin)."""
