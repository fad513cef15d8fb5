"""Tokenization: tokenizer specs, training and loading (tokenizer.py) and the token shards
the tokenize stage writes and the loaders read (shards.py). Standalone: it imports nothing
else of llm_pipeline.data. Nothing is imported here: import the module you need.
"""
