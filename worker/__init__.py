"""The freshrec worker, one sub-package per concern.

Dependencies point one way: ``tools`` -> ``runtime`` -> ``serving`` -> ``learning`` /
``experiments`` -> ``config`` -> :mod:`consumers` / :mod:`model_store`.
"""
