"""The budget file, ``budgets.toml``: its schema (``schema.py``), loading it with file:line errors
(``loader.py``) and rewriting its baselines without losing what people wrote (``writer.py``).
Imports no torch and no pytest; each module is imported on its own, so that reading the file
never pays for tomlkit."""
