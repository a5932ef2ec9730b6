"""Exact K-Center-Greedy: the pure kernel (`kernel`), the driver loop (`driver`), Ray shard actors (`shard_actor`), and the method base geal/coreset share (`method`)."""
