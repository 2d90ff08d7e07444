"""Versioned checkpoints on disk and versioned item vectors in Redis."""
