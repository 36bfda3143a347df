"""End-to-end benchmarks of the dispatcher against a plain dramatiq baseline and a bare client.

Run `python benchmarks/run.py`; see benchmarks/README.md.
"""
