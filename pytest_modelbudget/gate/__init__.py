"""The gate: figures compared with limits and a baseline, and said so."""
