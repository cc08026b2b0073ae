"""Benchmark harness: pirsyncd against lsyncd 2.2.3 on the same workloads, in one run.

Run it with ``.venv/bin/python bench/run.py`` (or ``python -m bench``); see bench/README.rst.
"""
