"""Per-objective batch builders: torch Datasets and collate functions over token shards
and task splits. causal_lm.py: shifted next-token windows (GPT); masking.py and mlm_nsp.py:
BERT masking and MLM+NSP sentence pairs; span_masking.py and span_corruption.py: T5 span
noise and span-corrupted windows; classification.py: labelled texts for fine-tuning.
Nothing is imported here (each module imports torch): import the module you need.
"""
