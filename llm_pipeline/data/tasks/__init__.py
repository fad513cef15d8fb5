"""Downstream tasks: what ingest builds from the split corpus, and how a stage reads one back.

One module per task (classification, summarization, translation, qa, nsp, generation, and
users' own task files in local.py), each with its config and builder; build.py runs the
enabled ones and checks val/test against the corpus train split (leakage.py); base.py holds
the task table, its card and its writer; loading.py reads a written split back for the
training and evaluation stages. Nothing is imported here: import the module you need.
"""
