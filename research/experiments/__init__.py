"""Experiments (docs/experiments.md): one module per experiment, a shared resumable runner, plots."""
