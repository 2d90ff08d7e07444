"""Experiments and monitoring: arm assignment, statistics, exploration policies, drift."""
