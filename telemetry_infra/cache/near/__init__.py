"""The near cache: a per-process tier in front of Redis, kept exact by invalidation channels."""
