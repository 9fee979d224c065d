"""Synthetic data and tiny models for tests, demos and benchmarks. Never real benchmark data."""
