"""Coordinator-side protocol runs (jobs): wiring of the drivers in :mod:`fedcore.protocol` to runs."""
