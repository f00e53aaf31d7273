import pytest

from services.clients.population import build_population, num_malicious


def test_population_layout_benign_first_then_malicious(pools):
    specs = build_population(pools.client, 10, 0.3, 50)
    assert [s.kind for s in specs] == ["benign"] * 7 + ["malicious"] * 3
    assert len({s.client_id for s in specs}) == 10
    assert all(len(s.examples) == 50 for s in specs)


def test_shards_are_disjoint_and_come_from_the_client_pool(pools):
    specs = build_population(pools.client, 6, 0.5, 40)
    seen: set[tuple[str, str]] = set()
    for spec in specs:
        rows = set(spec.examples)
        assert not rows & seen
        seen |= rows
    harmful = {(p.instruction, p.harmful) for p in pools.client.harmful}
    assert all(set(s.examples) <= harmful for s in specs if s.malicious)


def test_bad_population_arguments(pools):
    with pytest.raises(ValueError, match="client pool"):
        build_population(pools.probe, 4, 0.5, 10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        num_malicious(10, 1.5)
    with pytest.raises(ValueError, match="cannot fill"):
        build_population(pools.client, 2000, 1.0, 10)
