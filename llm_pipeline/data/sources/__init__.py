"""Corpus sources: where documents come from, up to `Document`/`BadRecord` records.

kinds.py declares every source kind of params/ingest.yaml (`sources:`) with its config
and loader; apt_sources.py fetches Debian archive files, debian.py and bible.py turn them
into descriptions and chapters; local_files.py is the one entry point for users' files,
read record by record by readers.py (compression.py: .gz/.bz2/.zst); hf_datasets.py reads
`datasets` datasets. Nothing is imported here, so `datasets` (slow) stays imported only
when an hf_dataset source is loaded.
"""
