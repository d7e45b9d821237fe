"""``python main.py bench``: measurements whose results go to docs/BENCHMARKS.md (never timed tests).
Imports every room below cli."""
