"""WebDataset tar shards: read in place and written from any manifest (:mod:`.wds`).
Streaming them for training by steps is :mod:`clapkit.data.stream`."""

from .wds import expand_shards, index_tar, shard_pattern, wds_pairs, write_shards, write_tar

__all__ = ["expand_shards", "index_tar", "shard_pattern", "wds_pairs", "write_shards", "write_tar"]
