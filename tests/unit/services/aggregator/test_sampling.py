from services.aggregator.sampling import sample_clients

IDS = [f"client-{i:03d}" for i in range(10)]


def test_sampling_is_seeded_distinct_and_sized():
    a = sample_clients(IDS, 4, seed=1, round_index=3)
    assert a == sample_clients(list(reversed(IDS)), 4, seed=1, round_index=3)
    assert len(set(a)) == 4 and set(a) <= set(IDS)


def test_rounds_differ_and_every_client_gets_picked_eventually():
    rounds = [tuple(sample_clients(IDS, 4, 1, r)) for r in range(20)]
    assert len(set(rounds)) > 1
    assert set().union(*rounds) == set(IDS)


def test_fewer_clients_than_per_round_returns_all():
    assert sample_clients(IDS[:2], 4, 1, 0) == IDS[:2]
