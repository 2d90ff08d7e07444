"""Runtime: wiring from settings, the main loop, and the metrics module."""
