"""The corpus: from loaded sources to cleaned, split, deduplicated and mixed documents.

cleaning.py normalizes and length-filters texts, splits.py assigns train/val/test from a
stable hash, dedup.py removes exact and near duplicates across splits (on disk), mixing.py
gives each train document its copies under the source weights. chunks.py is one worker's share
(a chunk of documents cleaned, split, hashed and MinHashed into the work folder), engine.py
runs the workers (local processes or a Dask cluster), and build.py drives it all and writes
the corpus out. Nothing is imported here: import the module you need.
"""
