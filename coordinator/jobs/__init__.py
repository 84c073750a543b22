"""Coordinator-side protocol runs (jobs). Horizontal training: :mod:`coordinator.jobs.horizontal`."""
