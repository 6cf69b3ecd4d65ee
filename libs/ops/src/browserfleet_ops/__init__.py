"""Operator tools that reach PostgreSQL and NATS directly: `browserfleet backup`, `restore` and `import-mvp`."""
