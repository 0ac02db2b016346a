"""The gate: measured figures compared with limits and a baseline (``verdict.py``), and said so:
failure messages, per-layer diffs, the end-of-run table and reports (``render.py``,
``reports.py``). Plain data in, text out; imports no torch, no pytest."""
