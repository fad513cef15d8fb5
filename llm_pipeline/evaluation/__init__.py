"""Metrics (pure functions) and the evaluation harness pieces."""
