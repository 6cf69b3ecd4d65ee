"""Shared runtime of every browserfleet service: settings, db, messaging, observability, security."""
