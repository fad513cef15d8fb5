"""Data, grouped by role; imports point one way: records -> sources -> corpus -> tasks -> loaders.

records.py: the shared records (Document, QuarantineRow) and stable ids/hashes; sources/:
readers of every corpus source and their registry; corpus/: cleaning, splits, dedup,
mixing; tasks/: downstream task builders and the split reader; tokenization/: tokenizers
and token shards (standalone); loaders/: per-objective datasets and collate functions.
"""
