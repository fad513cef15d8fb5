"""Model FLOPs of a transformer forward + backward pass: what MFU divides by the device's peak.

Model FLOPs count the useful work only (6 per parameter per token, plus attention), not
recomputation or padding, so MFU compares fairly across implementations (PaLM, appendix B).
Each family's model counts its own through `count_flops`, which calls this.
"""

from __future__ import annotations


def compute_transformer_flops(n_params: int, n_layer: int, n_embd: int, seq_len: int, tokens: int) -> float:
    """Forward + backward FLOPs for `tokens` tokens: 6 per parameter per token (2 forward, 4
    backward) plus attention scores and weighted sum, 12 * n_layer * n_embd * seq_len per token."""
    return tokens * (6 * n_params + 12 * n_layer * n_embd * seq_len)
