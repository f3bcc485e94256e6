"""What keeps the cache answering while Redis is down: the memory store, breaker and journal."""
