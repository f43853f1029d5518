"""What the pages call (one module per area): reads, imports and background jobs. Pages render only: they
never import core.store or duckdb, open connections or start processes themselves."""
