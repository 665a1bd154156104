"""Benchmarks: measured and printed with the ratio to each target, never asserted.

    .venv/bin/python -m benchmarks                   # all of them
    .venv/bin/python -m benchmarks.connector_client  # one

See benchmarks/README.md.
"""
