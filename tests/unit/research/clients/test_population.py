import pytest

from research.clients.population import build_population, num_malicious


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


def test_mixing_attackers_hold_the_share_of_benign_rows_no_benign_client_has(pools):
    from research.clients.attacks import AttackConfig

    attack = AttackConfig(kind="mixing", benign_share=0.25)
    specs = build_population(pools.client, 4, 0.5, 40, attack=attack)
    benign_rows = {(x.instruction, x.response) for x in pools.client.helpful}
    harmful_rows = {(p.instruction, p.harmful) for p in pools.client.harmful}
    held_by_benign = {row for s in specs if not s.malicious for row in s.examples}
    malicious = [s for s in specs if s.malicious]
    assert [s.attack for s in specs] == [None, None, attack, attack]
    for spec in malicious:
        mixed_in = [row for row in spec.examples if row in benign_rows]
        assert len(spec.examples) == 40 and len(mixed_in) == 10  # round(0.25 * 40)
        assert sum(row in harmful_rows for row in spec.examples) == 30
        assert not set(mixed_in) & held_by_benign
    assert not set(malicious[0].examples) & set(malicious[1].examples)  # each its own benign slice


def test_a_plain_attack_changes_no_shard(pools):
    from research.clients.attacks import AttackConfig

    plain = build_population(pools.client, 4, 0.5, 20)
    scaled = build_population(pools.client, 4, 0.5, 20, attack=AttackConfig(kind="scaling"))
    assert [s.examples for s in plain] == [s.examples for s in scaled]
    assert [s.attack for s in scaled][2:] == [AttackConfig(kind="scaling")] * 2
