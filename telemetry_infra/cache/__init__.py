"""The cache: ``CacheManager`` (Redis with a memory fallback) and ``@cached``."""

from telemetry_infra.cache.codec import SIGNING_KEY_ENV
from telemetry_infra.cache.decorators import cached, get_default_cache_manager, set_default_cache_manager
from telemetry_infra.cache.errors import (
    CacheClosedError,
    CacheDecodeError,
    CacheError,
    CachePoolExhaustedError,
    CacheSerializationError,
    CacheWriteError,
)
from telemetry_infra.cache.manager import CacheManager

__all__ = [
    "SIGNING_KEY_ENV",
    "CacheClosedError",
    "CacheDecodeError",
    "CacheError",
    "CacheManager",
    "CachePoolExhaustedError",
    "CacheSerializationError",
    "CacheWriteError",
    "cached",
    "get_default_cache_manager",
    "set_default_cache_manager",
]
