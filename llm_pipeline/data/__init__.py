"""Data: source readers, cleaning, dedup, splits, task builders, token shards, datasets."""
