"""llm-pipeline: raw text -> tokenizer -> pretrained LM -> fine-tuned task models -> evaluation."""

__version__ = "0.1.0"
