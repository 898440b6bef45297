"""Benchmarks of a2wsgi_mp against its peers: ``python -m benchmarks --quick``."""
