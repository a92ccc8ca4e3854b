"""Sweeps: override lists run by hbt.experiments.sweep (see configs/sweeps/strategies.py)."""
