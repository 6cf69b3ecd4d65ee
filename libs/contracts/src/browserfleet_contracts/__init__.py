"""browserfleet's message and API contracts: the single source of truth for every payload."""
