"""Benchmarks behind docs/benchmarks.md: ``nni-diffusionnag bench {generate,guidance,search}``."""
