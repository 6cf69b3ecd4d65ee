"""`browserfleet import-mvp DIR`: the MVP's JSON files into the platform (docs/operations.md)."""
