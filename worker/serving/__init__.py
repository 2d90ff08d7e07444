"""Serving helpers: rank candidates for a user from an arm's published vectors."""
