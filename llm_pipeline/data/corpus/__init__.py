"""The corpus: from loaded sources to cleaned, split, deduplicated and mixed documents.

cleaning.py normalizes and length-filters texts, splits.py assigns train/val/test from a
stable hash, dedup.py removes exact and near duplicates across splits, build.py runs the
three over every loaded source, and mixing.py applies the source weights to the train
split. Nothing is imported here: import the module you need.
"""
