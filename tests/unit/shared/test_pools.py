from itertools import combinations

from shared.config import runtime_settings
from shared.data.pools import POOL_NAMES, PoolSizes, build_pools
from shared.data.sources import normalise_instruction


def test_pools_are_pairwise_disjoint_by_normalised_instruction(pools):
    for a, b in combinations(POOL_NAMES, 2):
        overlap = pools[a].instructions() & pools[b].instructions()
        assert not overlap, f"{a} and {b} share {len(overlap)} instructions"


def test_pools_are_deterministic(pools):
    again = build_pools(runtime_settings().data_dir)
    for name in POOL_NAMES:
        assert pools[name] == again[name]


def test_a_different_seed_gives_a_different_split(pools):
    other = build_pools(runtime_settings().data_dir, PoolSizes(seed=7))
    assert pools.client.harmful != other.client.harmful
    for a, b in combinations(POOL_NAMES, 2):
        assert not other[a].instructions() & other[b].instructions()


def test_pool_sizes_and_prompt_only_sets_live_in_evaluation(pools):
    assert len(pools.alignment.harmful) == 1000
    assert len(pools.probe.harmful) == 800
    assert len(pools.client.harmful) == 1200
    assert len(pools.evaluation.harmful) == 3551 - 3000
    assert len(pools.evaluation.harmful_prompts) == 520 + 100  # AdvBench + I-MaliciousInstructions
    assert len(pools.evaluation.benign_prompts) == 50
    for name in ("alignment", "probe", "client"):
        assert not pools[name].harmful_prompts and not pools[name].benign_prompts


def test_harmful_pairs_keep_question_alignment(pools):
    for pair in pools.client.harmful[:50]:
        assert pair.harmful and pair.safe and pair.harmful != pair.safe


def test_normalisation_ignores_case_space_and_punctuation():
    assert normalise_instruction("  How do I, bake  bread? ") == normalise_instruction("how do i bake bread")


def test_the_fltrust_root_pool_is_small_clean_and_disjoint_from_every_other_pool(pools):
    from shared.data.pools import ROOT_POOL

    root = pools[ROOT_POOL]
    assert root.counts() == {
        "harmful": 0,
        "helpful": 0,
        "alpaca": 100,
        "dolly": 0,
        "harmful_prompts": 0,
        "benign_prompts": 0,
    }
    for name in POOL_NAMES:
        assert not root.instructions() & pools[name].instructions(), name


def test_the_alignment_instruction_share_moves_only_unevaluated_alpaca_rows(pools):
    """#28: Alpaca rows for the alignment stage come from the end of the evaluation pool's Alpaca share, so
    the probe, client and root pools (and every cached client update) are exactly the default ones."""
    moved = build_pools(runtime_settings().data_dir, PoolSizes(alignment_instructions=300))
    for name in ("probe", "client"):
        assert moved[name] == pools[name]
    assert moved.root == pools.root
    assert moved.alignment.alpaca == pools.evaluation.alpaca[-300:]
    assert moved.evaluation.alpaca == pools.evaluation.alpaca[:-300]
    # what the evaluation measures is untouched
    for field in ("harmful", "helpful", "harmful_prompts", "benign_prompts"):
        assert getattr(moved.evaluation, field) == getattr(pools.evaluation, field)
    for a, b in combinations(POOL_NAMES, 2):
        assert not moved[a].instructions() & moved[b].instructions()
