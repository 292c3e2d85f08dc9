import pickle

from pipeline.seen_ids import SeenIds


def test_the_last_capacity_ids_are_always_found_through_rotations_and_checkpoints() -> None:
    seen = SeenIds(capacity=500, error_rate=1e-6)
    for n in range(3000):
        assert not seen.check_and_add(f"id{n}")
        if n % 700 == 0:
            seen = pickle.loads(pickle.dumps(seen))
        # Every id of the last `capacity` is found (no false negatives there).
        assert all(f"id{m}" in seen for m in range(max(0, n - 499), n + 1, 37))
    assert seen.check_and_add("id2600")  # 400 ids back: a duplicate
    assert "id10" not in seen  # 2,990 back: forgotten, bounded memory


def test_false_positive_rate_is_about_what_was_asked() -> None:
    seen = SeenIds(capacity=20_000, error_rate=1e-3)
    for n in range(2 * 20_000 - 1):  # a full previous filter and a nearly full current one
        seen.check_and_add(f"a{n}")
    rate = sum(f"b{n}" in seen for n in range(100_000)) / 100_000
    assert rate < 2.5e-3, rate  # at most twice the rate of one full filter (two looked at)
