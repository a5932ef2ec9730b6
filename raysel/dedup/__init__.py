"""`raysel dedup`: near-duplicate removal over a feature store's embeddings, SemDeDup-style, on Ray.

kernel: the pure math (spherical K-Means steps per row block, duplicate groups inside one cluster);
shard_actor: a Ray actor holding whole store files and calling the kernel on them;
driver: `run_dedup(config)`, K-Means over the actors, clusters shuffled to the actor that owns
them, the duplicates file written; reference: the same computation in one process, the
reference the distributed run is tested against; exclude: reading a duplicates file back
(`select --exclude`).
"""
from raysel.dedup.driver import DedupSummary, run_dedup
from raysel.dedup.errors import DedupError

__all__ = ["run_dedup", "DedupSummary", "DedupError"]
