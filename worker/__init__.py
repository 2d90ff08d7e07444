"""The freshrec worker: training loop, serving helpers, metrics, CLI wiring."""
