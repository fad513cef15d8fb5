"""Stages: one module per pipeline stage (`<Stage>Config`, `run(cfg, tracker)`)."""
