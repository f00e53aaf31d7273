"""Data sets shipped under data/ and their split into disjoint pools (alignment, probe, client, evaluation)."""

from shared.data.pools import POOL_NAMES, DataPools, Pool, PoolSizes, build_pools
from shared.data.sources import Example, HarmfulPair, normalise_instruction

__all__ = [
    "POOL_NAMES",
    "DataPools",
    "Example",
    "HarmfulPair",
    "Pool",
    "PoolSizes",
    "build_pools",
    "normalise_instruction",
]
