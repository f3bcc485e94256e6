"""Redis for the cache: URLs, the backends for one node, a Cluster and a Sentinel-managed primary."""
