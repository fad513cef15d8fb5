import pytest

from llm_pipeline.data.corpus.mixing import copies
from llm_pipeline.data.records import Document


def _docs(source, n):
    return [Document(source, str(i), f"{source} text {i}") for i in range(n)]


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0, 1.5, 2.0, 3.25])
def test_copies_are_the_whole_part_plus_a_hash_chosen_share(weight):
    docs = _docs("a", 2000)
    n = [copies(d, weight, "seed") for d in docs]
    assert set(n) <= {int(weight), int(weight) + 1}
    assert sum(n) == pytest.approx(weight * len(docs), abs=0.04 * len(docs) + 1)
    assert n == [copies(d, weight, "seed") for d in docs]  # deterministic
    if weight % 1:
        assert n != [copies(d, weight, "other seed") for d in docs]  # the seed picks the share
