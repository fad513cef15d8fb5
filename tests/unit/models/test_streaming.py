"""`generate(..., on_token=...)`: the per-token callback streaming is built on (models/decoding.py)."""

from __future__ import annotations

from typing import Any, cast

import pytest
import torch

from llm_pipeline.registry import build_model


@pytest.mark.parametrize("family", ["gpt", "t5"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_on_token_sees_each_step_as_generate_returns_it(family, temperature):
    torch.manual_seed(0)
    model = cast(Any, build_model(family, "tiny", 40).eval())  # GPT | T5: both have generate
    ids = torch.randint(3, 40, (2, 5))
    seen: list[torch.Tensor] = []
    kwargs = dict(temperature=temperature, top_k=10, stop_ids=(7,))
    out = model.generate(ids, 9, generator=torch.Generator().manual_seed(3), on_token=seen.append, **kwargs)
    again = model.generate(ids, 9, generator=torch.Generator().manual_seed(3), **kwargs)
    assert all(step.shape == (2, 1) for step in seen)
    torch.testing.assert_close(torch.cat(seen, dim=1), out, rtol=0, atol=0)
    torch.testing.assert_close(out, again, rtol=0, atol=0)  # the callback changes nothing


def test_beam_search_takes_no_on_token():
    model = cast(Any, build_model("gpt", "tiny", 40).eval())
    with pytest.raises(ValueError, match="on_token"):
        model.generate(torch.ones(1, 3, dtype=torch.long), 4, num_beams=2, on_token=lambda new: None)
