"""Pure K-Means kernels (`kmeans`) and the Ray Data stage that runs them (`knowledge_clusters`)."""
from __future__ import annotations

from raysel.cluster.kmeans import batched_kmeans, kmeans_single

__all__ = ["batched_kmeans", "kmeans_single"]
