"""Each aggregation rule pinned on a small input where the intended rule and its plausible wrong versions
give different answers, asserted exactly (up to float32 rounding of the adapter)."""

import numpy as np
import pytest

from services.aggregator.strategies import STRATEGIES, make_strategy
from services.aggregator.strategies.dnc import dnc_kept
from services.aggregator.strategies.tensors import FlatLayout, round_rng
from shared.updates import ClientUpdate


def _round(rows, global_row=None, key="m.layers.0.q.lora_B.weight", samples=None):
    """Global state and updates whose flat deltas are `rows` (one [1, d] matrix per client); n_i = 10 unless
    `samples` says otherwise."""
    rows = np.asarray(rows, dtype=np.float64)
    layout = FlatLayout((key,), ((1, rows.shape[1]),))
    base = np.zeros(rows.shape[1]) if global_row is None else np.asarray(global_row, dtype=np.float64)
    samples = [10] * len(rows) if samples is None else samples
    updates = [
        ClientUpdate(f"c{i}", 0, n, layout.unflatten(base + r))
        for i, (r, n) in enumerate(zip(rows, samples, strict=True))
    ]
    return layout.unflatten(base), updates, layout, base


def _delta(name, rows, round_index=0, global_row=None, samples=None, factors=None, **options):
    global_state, updates, layout, base = _round(rows, global_row, samples=samples)
    strategy = make_strategy(name, **options)
    result = strategy.aggregate(global_state, updates, factors, round_index=round_index)
    return layout.flatten(result.state) - base, result


POINTS = [[3.0], [7.0], [8.0], [13.0], [16.0], [18.0]]


def test_krum_is_the_single_update_with_the_least_squared_distance_to_its_n_minus_f_minus_2_nearest():
    # f = 1, 3 neighbours, squared: 3->141, 7->53, 8->51, 13->59, 16->77, 18->129: the point 8.
    # Plain distances would pick 7, n - f - 1 neighbours 13, f = 2 picks 16, Multi-Krum averages 12.4.
    delta, result = _delta("krum", POINTS, num_attackers=1)
    assert delta.tolist() == [8.0]
    assert result.client_weights == {"c0": 0, "c1": 0, "c2": 1.0, "c3": 0, "c4": 0, "c5": 0}
    assert _delta("krum", POINTS, num_attackers=2)[0].tolist() == [16.0]


def test_multi_krum_averages_the_n_minus_f_best_scores():
    assert _delta("multi_krum", POINTS, num_attackers=1)[0] == pytest.approx([62 / 5])  # all but 3
    assert _delta("multi_krum", POINTS, num_attackers=1, num_selected=3)[0] == pytest.approx([28 / 3])


def test_official_krum_averages_the_neighbourhood_of_the_best_plain_distance_sum():
    # plain distances to the 4 nearest others: 3->32, 7->20, 8->19, 13->19, 16->22, 18->28; i* = 8 (first);
    # its 5 nearest, itself included: 8, 7, 13, 3, 16 -> 47 / 5.
    delta, result = _delta("krum_official", POINTS, num_attackers=1)
    assert delta == pytest.approx([47 / 5])
    assert result.client_weights["c5"] == 0 and result.client_weights["c0"] == pytest.approx(0.2)


def test_krum_needs_a_declared_number_of_attackers():
    with pytest.raises(ValueError, match="missing required \\['num_attackers'\\]"):
        make_strategy("krum")


def test_median_convention_for_an_even_count_is_explicit():
    rows = [[0.0], [1.0], [3.0], [100.0]]
    assert _delta("median", rows)[0].tolist() == [2.0]  # numpy / textbook: mean of the middle two
    assert _delta("median", rows, even="lower")[0].tolist() == [1.0]  # torch.median, the official code
    with pytest.raises(ValueError, match="even"):
        make_strategy("median", even="upper")


def test_median_is_not_the_trimmed_mean():
    rows = [[0.0], [1.0], [2.0], [6.0], [100.0]]
    assert _delta("median", rows)[0].tolist() == [2.0]
    assert _delta("trimmed_mean", rows)[0] == pytest.approx([3.0])  # drops 0 and 100
    assert _delta("trimmed_mean", rows, trim=2)[0].tolist() == [2.0]


def test_trimmed_mean_falls_back_to_the_median_when_n_is_2_trim():
    # n = 2 · trim leaves nothing to average: the median of 1 and 5 (3.0), said so; n = 3 trims to 5
    delta, result = _delta("trimmed_mean", [[1.0], [5.0]])
    assert delta.tolist() == [3.0] and result.reason == "2 clients cannot lose 2 x 1: median"
    assert _delta("trimmed_mean", [[1.0], [5.0], [9.0]])[0].tolist() == [5.0]


def test_dnc_removes_f_updates_not_one():
    # one coordinate: the top singular direction is the axis; scores are squared deviations from 5.2
    rows = [[0.0], [1.0], [2.0], [3.0], [20.0]]
    assert _delta("dnc", rows, num_attackers=1)[0] == pytest.approx([1.5])
    assert _delta("dnc", rows, num_attackers=2)[0] == pytest.approx([2.0])  # 20 and 0 removed
    assert _delta("dnc", rows, num_attackers=2, filter_fraction=0.5)[0] == pytest.approx([1.5])


def test_dnc_draws_fresh_coordinates_each_round_and_uses_its_iterations():
    # coordinate 0 isolates client 0, coordinate 1 isolates client 1; one coordinate is sampled per pass
    rows = [[9.0, 0.0], [0.0, 9.0], [0.0, 0.0], [0.1, 0.1], [0.0, 0.2]]
    seen = {tuple(dnc_kept(np.asarray(rows), 1, 1, 1, round_rng(2023, r))) for r in range(12)}
    assert seen == {(1, 2, 3, 4), (0, 2, 3, 4)}  # different rounds sample different coordinates
    for r in range(12):
        once = _delta("dnc", rows, r, num_attackers=1, subsample=1)[1]
        drawn = round_rng(2023, r).choice(2, size=1, replace=False)[0]
        assert once.client_weights[f"c{drawn}"] == 0.0 and once.client_weights[f"c{1 - drawn}"] == 0.25
    # with many passes both coordinates are drawn and both outliers go (the intersection of good sets)
    many = _delta("dnc", rows, 0, num_attackers=1, subsample=1, iterations=12)[1]
    assert many.client_weights == {"c0": 0.0, "c1": 0.0, "c2": 1 / 3, "c3": 1 / 3, "c4": 1 / 3}
    assert _delta("dnc", rows, 3, num_attackers=1)[0] == pytest.approx(
        _delta("dnc", rows, 3, num_attackers=1)[0]
    )


FLAME_ROWS = [[1.0, 0.0], [2.0, 0.02], [4.0, 0.12], [8.0, 0.16], [-1.0, 5.0], [0.5, 6.0]]


def test_flame_keeps_the_cosine_cluster_and_clips_it_to_the_median_norm():
    delta, result = _delta("flame", FLAME_ROWS, noise_factor=0.0)
    assert result.details["kept"] == ["c0", "c1", "c2", "c3"]
    norms = np.linalg.norm(FLAME_ROWS, axis=1)
    bound = np.median(norms)  # over all six clients: (4.0018 + 5.0990) / 2
    clipped = [np.asarray(r) * min(1.0, bound / n) for r, n in zip(FLAME_ROWS[:4], norms[:4], strict=True)]
    assert delta == pytest.approx(np.mean(clipped, axis=0), abs=1e-6)
    assert delta[0] < np.mean(FLAME_ROWS[:4], axis=0)[0] - 0.5  # FLAME without clipping: 3.75


def test_flame_adds_fresh_gaussian_noise_of_lambda_times_the_bound_each_round():
    clean = _delta("flame", FLAME_ROWS, noise_factor=0.0)[0]
    bound = float(np.median(np.linalg.norm(FLAME_ROWS, axis=1)))
    noisy = {}
    for r in (0, 1):
        noisy[r] = _delta("flame", FLAME_ROWS, r, noise_factor=0.01)[0]
        expected = round_rng(2023, r).normal(0.0, 0.01 * bound, size=2)
        assert noisy[r] - clean == pytest.approx(expected, abs=1e-6)
    assert not np.allclose(noisy[0], noisy[1])


def test_flame_clusters_weights_by_default_and_updates_on_request():
    # a shared global along the second axis changes the angles between whole weight vectors
    weights = _delta("flame", FLAME_ROWS, global_row=[0.0, 100.0], noise_factor=0.0)[1]
    updates = _delta("flame", FLAME_ROWS, global_row=[0.0, 100.0], noise_factor=0.0, cluster_on="updates")[1]
    assert weights.details["kept"] == ["c0", "c1", "c4", "c5"]
    assert updates.details["kept"] == ["c0", "c1", "c2", "c3"]


def test_flame_official_clustering_clusters_distance_rows():
    rows = [[-1.0, 0.0], [3.0, 3.0], [0.0, -2.0], [-2.0, 2.0], [1.0, -2.0]]
    paper = _delta("flame", rows, noise_factor=0.0, cluster_on="updates")[1]
    official = _delta("flame", rows, noise_factor=0.0, cluster_on="updates", clustering="official")[1]
    assert paper.details["kept"] == ["c0", "c1", "c2", "c3", "c4"]
    assert official.details["kept"] == ["c0", "c1", "c3"]


def test_foolsgold_pardons_clients_less_similar_than_their_partner():
    # weights (official code, transcribed, same input): [1, 0, 0, 0.81194]; without pardoning c3 gets 0.0395
    rows = [[-3.0, 1.0, -2.0], [2.0, 3.0, 0.0], [3.0, 2.0, -1.0], [3.0, -1.0, -3.0]]
    delta, result = _delta("foolsgold", rows)
    wv3 = 0.8119363839731087
    assert delta == pytest.approx((np.asarray(rows[0]) + wv3 * np.asarray(rows[3])) / 2, abs=1e-6)
    assert result.client_weights["c3"] == pytest.approx(wv3 / (1 + wv3))


def test_lasa_clips_sparsifies_and_filters_norms_and_signs_per_layer():
    # norms √30, √39, √30, √3000: clip to the lower median √30 (c1 and c3 shrink); keep entries strictly
    # above the 2nd largest |x|, i.e. only the largest: c0 [4,0,0,0], c1 [0,4.385,0,0], c2 [-4,0,0,0],
    # c3 [4,0,0,0]. Norm filter: c1 (4.385) has z = 2.3 > 1. Sign scores .85 .85 .15 .85: c2 has z = 2.3.
    # Admitted: c0 and c3 -> [4, 0, 0, 0]. (The official code, transcribed, gives the same on this input.)
    rows = [[4.0, 3.0, 2.0, 1.0], [3.0, 5.0, 1.0, 2.0], [-4.0, 3.0, 2.0, 1.0], [40.0, 30.0, 20.0, 10.0]]
    delta, result = _delta("lasa", rows)
    assert delta == pytest.approx([4.0, 0.0, 0.0, 0.0], abs=1e-6)
    assert result.client_weights["c1"] == result.client_weights["c2"] == 0.0
    assert not np.allclose(_delta("lasa", rows, sparsity=0.0)[0], delta)


def test_residual_base_gives_the_off_line_client_no_weight():
    # y = 0, 1, 2, 30: repeated-median line 0 + 1·rank, residuals 0, 0, 0, 27, M = 0 so τ = 1e-7; the
    # outlier's weight K·h/|e| ≈ 3e-9 -> confidences 0.5, 0.5, 0.5, ~0 -> mean of the first three.
    delta, result = _delta("residual", [[0.0], [1.0], [2.0], [30.0]])
    assert delta == pytest.approx([1.0], abs=1e-6)  # the mean would be 8.25, the median 1.5
    assert [result.client_weights[f"c{i}"] for i in range(4)] == pytest.approx(
        [1 / 3, 1 / 3, 1 / 3, 0], abs=1e-9
    )


def test_fltrust_weights_by_relu_cosine_to_the_server_update_and_rescales_to_its_norm():
    server = np.array([2.0, 0.0])
    rows = [[1.0, 1.0], [3.0, 0.0], [-1.0, 0.0]]

    def server_update(global_state, round_index):
        assert round_index == 4
        return {k: v + server.reshape(v.shape).astype(np.float32) for k, v in global_state.items()}

    delta, result = _delta("fltrust", rows, 4, server_update=server_update)
    ts = np.array([1 / np.sqrt(2), 1.0, 0.0])  # ReLU(cos)
    rescaled = [np.array([1.0, 1.0]) * 2 / np.sqrt(2), np.array([2.0, 0.0]), np.array([-2.0, 0.0])]
    assert delta == pytest.approx(sum(t * g for t, g in zip(ts, rescaled, strict=True)) / ts.sum(), abs=1e-6)
    assert result.client_weights["c2"] == 0.0


BULYAN_POINTS = [[4.0], [19.0], [25.0], [34.0], [37.0], [38.0], [39.0]]


def test_bulyan_picks_n_minus_2f_by_rescored_krum_then_averages_the_beta_closest_to_their_median():
    # n = 7, f = 1 (n >= 4f + 3 holds): θ = 5 picks, each by Krum's score (squared distances to the
    # m − f − 2 nearest, at least 1) on the m updates left:
    #   m=7 (4 nbrs): 4->2655 19->810 25->430 34->131 37->158 38->187 39->226: pick 34
    #   m=6 (3 nbrs): 4->1755 19->585 25->349 37->149 38->171 39->201: pick 37
    #   m=5 (2 nbrs): 4->666 19->261 25->205 38->170 39->197: pick 38
    #   m=4 (1 nbr): 4->225 19->36 25->36 39->196: pick 19 (tie with 25, taken next either way)
    #   m=3 (1 nbr): 4->441 25->196 39->196: pick 25. Selection {19, 25, 34, 37, 38}.
    # β = θ − 2f = 3 values closest to the selection's median 34: 34, 37, 38 -> 109/3.
    # Wrong versions: θ = n − f -> 33.5; β = θ − f -> 33.5; β = θ (mean of the selection) -> 30.6;
    # scoring once (no re-scoring; picks 34 37 38 39 25) -> 38; distances to the mean 30.6 -> 32.
    delta, result = _delta("bulyan", BULYAN_POINTS, num_attackers=1)
    assert delta == pytest.approx([109 / 3], abs=1e-5)
    assert result.client_weights == {
        "c0": 0.0,
        "c1": 0.2,
        "c2": 0.2,
        "c3": 0.2,
        "c4": 0.2,
        "c5": 0.2,
        "c6": 0.0,
    }
    assert result.reason == ""


def test_bulyan_lowers_f_to_what_n_allows_and_says_so():
    # n = 6 < 4f + 3 = 7: f = (6 − 3) // 4 = 0, so θ = β = 6: the plain mean 30 / 6 = 5. Keeping f = 1
    # would select {0, 1, 2, 3} and average the two closest to 1.5 -> 1.5.
    delta, result = _delta("bulyan", [[0.0], [1.0], [2.0], [3.0], [4.0], [20.0]], num_attackers=1)
    assert delta == pytest.approx([5.0], abs=1e-6)
    assert result.reason == "6 clients allow f=0 (< 1)"
    assert set(result.client_weights.values()) == {1 / 6}


def test_fedavg_weights_are_samples_times_factors():
    # n = 10, 30 and s = 0.5, 1: weights 5 : 30 -> (5·1 + 30·4) / 35 = 25/7. Equal weights with factors
    # give 3.0, samples without factors 3.25.
    delta, result = _delta("fedavg", [[1.0], [4.0]], samples=[10, 30], factors=[0.5, 1.0])
    assert delta == pytest.approx([25 / 7], abs=1e-6)
    assert result.client_weights == pytest.approx({"c0": 1 / 7, "c1": 6 / 7})
    assert _delta("fedavg", [[1.0], [4.0]], samples=[10, 30])[0] == pytest.approx([3.25])


def test_geometric_median_weights_each_update_by_its_sample_count():
    # In one dimension the weighted geometric median is the weighted median: n = 10, 10, 30 puts 60% of
    # the weight on 10, so the median is 10. Equal weights would give the middle point 1, the mean 3.67.
    delta, result = _delta("geometric_median", [[0.0], [1.0], [10.0]], samples=[10, 10, 30])
    assert delta == pytest.approx([10.0], abs=1e-6)
    assert result.client_weights["c2"] > 0.999
    assert _delta("geometric_median", [[0.0], [1.0], [10.0]])[0] == pytest.approx([1.0], abs=1e-6)


def test_norm_clipping_clips_to_the_median_norm_then_weights_by_sample_count():
    # norms 1, 2, 10: bound = median 2, so 10 -> 2; weights n = 10, 20, 70 -> -0.1 + 0.4 + 1.4 = 1.7.
    # Equal weights: 1.0; no clipping: 7.3; the mean norm 13/3 as bound: 3.33.
    rows, samples = [[-1.0], [2.0], [10.0]], [10, 20, 70]
    delta, result = _delta("norm_clipping", rows, samples=samples)
    assert delta == pytest.approx([1.7], abs=1e-6)
    assert result.details["bound"] == 2.0
    assert result.client_weights == pytest.approx({"c0": 0.1, "c1": 0.2, "c2": 0.7})
    # a fixed bound 1.5: -1, 1.5, 1.5 -> -0.1 + 0.3 + 1.05 = 1.25
    assert _delta("norm_clipping", rows, samples=samples, bound=1.5)[0] == pytest.approx([1.25], abs=1e-6)


def test_residual_base_weights_clients_by_their_squared_normalised_confidence():
    # Per coordinate the repeated-median line through the sorted values is 0 + 1·rank and one client is off
    # it by 27 (coordinate 0: client 3 at 30; coordinates 1, 2: client 0 at −27), so M = 0, τ = 1e-7 and that
    # client's weight is ~0 while the others' is 1; std(w) = 0.5. Confidences: c0 0.5, c1 1.5, c2 1.5,
    # c3 1.0 -> normalised 1/3, 1, 1, 2/3 -> squared 1/9, 1, 1, 4/9 -> weights 1, 9, 9, 4 (/ 23). The
    # off-line values are restricted to the line (30 -> 3, −27 -> 0), so every coordinate averages
    # 0, 1, 2, 3: (9 + 18 + 12) / 23 = 39/23. Unsquared weights (1, 3, 3, 2)/9 give 5/3.
    rows = [[0.0, -27.0, -27.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [30.0, 3.0, 3.0]]
    delta, result = _delta("residual", rows)
    assert delta == pytest.approx([39 / 23] * 3, abs=1e-6)
    assert [result.client_weights[f"c{i}"] for i in range(4)] == pytest.approx(
        [1 / 23, 9 / 23, 9 / 23, 4 / 23], abs=1e-9
    )


# Every registered rule -> the tests above that pin it with a hand-computed answer. A new strategy fails
# the completeness test below until it has one (as test_options.py does for options).
PINNED = {
    "fedavg": (test_fedavg_weights_are_samples_times_factors,),
    "median": (test_median_convention_for_an_even_count_is_explicit, test_median_is_not_the_trimmed_mean),
    "trimmed_mean": (
        test_median_is_not_the_trimmed_mean,
        test_trimmed_mean_falls_back_to_the_median_when_n_is_2_trim,
    ),
    "krum": (
        test_krum_is_the_single_update_with_the_least_squared_distance_to_its_n_minus_f_minus_2_nearest,
    ),
    "multi_krum": (test_multi_krum_averages_the_n_minus_f_best_scores,),
    "krum_official": (test_official_krum_averages_the_neighbourhood_of_the_best_plain_distance_sum,),
    "bulyan": (
        test_bulyan_picks_n_minus_2f_by_rescored_krum_then_averages_the_beta_closest_to_their_median,
        test_bulyan_lowers_f_to_what_n_allows_and_says_so,
    ),
    "foolsgold": (test_foolsgold_pardons_clients_less_similar_than_their_partner,),
    "flame": (
        test_flame_keeps_the_cosine_cluster_and_clips_it_to_the_median_norm,
        test_flame_adds_fresh_gaussian_noise_of_lambda_times_the_bound_each_round,
        test_flame_clusters_weights_by_default_and_updates_on_request,
        test_flame_official_clustering_clusters_distance_rows,
    ),
    "dnc": (
        test_dnc_removes_f_updates_not_one,
        test_dnc_draws_fresh_coordinates_each_round_and_uses_its_iterations,
    ),
    "norm_clipping": (test_norm_clipping_clips_to_the_median_norm_then_weights_by_sample_count,),
    "geometric_median": (test_geometric_median_weights_each_update_by_its_sample_count,),
    "lasa": (test_lasa_clips_sparsifies_and_filters_norms_and_signs_per_layer,),
    "residual": (
        test_residual_base_gives_the_off_line_client_no_weight,
        test_residual_base_weights_clients_by_their_squared_normalised_confidence,
    ),
    "fltrust": (test_fltrust_weights_by_relu_cosine_to_the_server_update_and_rescales_to_its_norm,),
}


def test_every_registered_strategy_is_pinned_by_a_hand_computed_case():
    assert set(PINNED) == set(STRATEGIES)
    for name, tests in PINNED.items():
        assert tests, name
        for test in tests:
            assert test.__name__.startswith("test_") and globals()[test.__name__] is test, (name, test)
