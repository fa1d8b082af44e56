"""Measuring: verification sets and metrics (``dataset``, ``verification``) and the
benchmarks' shared helpers (``bench``)."""
