"""Developer tooling for browserfleet: the dev stack (`make dev`), embedded NATS/PostgreSQL, the pytest
plugin every package's tests use, and contract generation. No service or lib depends on it, and no
production image installs it."""
