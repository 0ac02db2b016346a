"""The budget file, ``budgets.toml``: its schema and loading, and rewriting its baselines."""
