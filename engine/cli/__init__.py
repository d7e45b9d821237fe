"""Command-line tools: argument parsing and printing only; the work is done by the rooms below.

Each module has ``add_arguments(parser)`` and ``run(args) -> int``; main.py imports only the chosen one.
"""
