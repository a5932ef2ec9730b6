"""The embedding pool as the low-budget methods see it: rows read from the store (`store_rows`, `embedding_pool`), seeded K-Means (`kmeans`) and the delta-ball graph (`ball_graph`)."""
