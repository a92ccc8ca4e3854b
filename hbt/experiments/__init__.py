"""Experiments: sweeps of hbt.main runs, their committed summaries, statistics and the report."""
