import random

import pytest

from llm_pipeline.data.records import unit_interval
from llm_pipeline.data.tasks.base import cap_rows, smallest


@pytest.mark.parametrize("seed", range(10))
def test_cap_rows_streams_the_hash_sample_of_the_whole_list(seed):
    rng = random.Random(seed)
    rows: list[dict[str, str]] = [{"group": f"g{rng.randint(0, 30)}", "i": str(i)} for i in range(rng.randint(0, 80))]
    cap = rng.choice([None, 1, 7, 40, 80, 200])
    if cap is None or len(rows) <= cap:
        want = rows  # nothing to cut: all, in order
    else:  # the rule: the cap smallest (hash of the group, position)
        keyed = sorted((unit_interval(r["group"], "s"), i) for i, r in enumerate(rows))
        want = [rows[i] for _, i in keyed[:cap]]
    assert cap_rows(iter(rows), cap, "s") == want


def test_smallest_keeps_the_limit_smallest_keys_in_order():
    keyed = [((k % 7, k), k) for k in range(50)]
    random.Random(0).shuffle(keyed)
    assert smallest(iter(keyed), 5) == [0, 7, 14, 21, 28]
    assert smallest(iter(keyed), None) == sorted(range(50), key=lambda k: (k % 7, k))
    assert smallest(iter([]), 3) == []
