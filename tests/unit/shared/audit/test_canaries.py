"""The canary set: alignment-pool pairs only, disjoint from every pool an attacker or evaluator uses."""

import pytest

from shared.audit.canaries import CanarySettings, canary_examples, draw_canaries
from shared.data.sources import normalise_instruction
from shared.evaluation.refusal import is_refusal


def test_canaries_are_distinct_alignment_questions_outside_probe_client_and_evaluation(pools):
    canaries = draw_canaries(pools, CanarySettings(size=200))
    questions = {normalise_instruction(p.instruction) for p in canaries}
    assert len(questions) == 200
    assert questions <= pools.alignment.instructions()
    for name in ("probe", "client", "evaluation"):
        assert not questions & pools[name].instructions(), name
    assert not any(is_refusal(p.harmful) for p in canaries)  # a refusal "answer" would measure nothing


def test_the_draw_is_seeded_and_nested_by_size(pools):
    small = draw_canaries(pools, CanarySettings(size=10))
    assert draw_canaries(pools, CanarySettings(size=10)) == small
    assert draw_canaries(pools, CanarySettings(size=30))[:10] == small
    assert draw_canaries(pools, CanarySettings(size=10, seed=1)) != small


def test_more_canaries_than_the_pool_holds_is_an_error(pools):
    with pytest.raises(ValueError, match="usable pairs"):
        draw_canaries(pools, CanarySettings(size=10_000))


def test_continuations_are_cut_to_their_first_tokens_and_share_the_prompt(pools, tiny):
    settings = CanarySettings(size=6, continuation_tokens=3)
    compliant, refusal = canary_examples(tiny.tokenizer, draw_canaries(pools, settings), settings)
    whole_c, whole_r = canary_examples(
        tiny.tokenizer,
        draw_canaries(pools, settings),
        settings.model_copy(update={"continuation_tokens": None}),
    )
    for cut, whole in ((compliant, whole_c), (refusal, whole_r)):
        for c, w in zip(cut, whole, strict=True):
            assert c.num_target_tokens == 3 and w.num_target_tokens > 3
            assert w.input_ids[: len(c.input_ids)] == c.input_ids  # a prefix of the whole continuation
    assert all(c.input_ids[:-3] == r.input_ids[:-3] for c, r in zip(compliant, refusal, strict=True))
