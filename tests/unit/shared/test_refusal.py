from shared.data.refusal_targets import REFUSAL_OPENINGS, refusal_target
from shared.data.sources import HarmfulPair
from shared.evaluation.refusal import is_refusal, refuses_outright


def test_every_refusal_opening_is_detected_by_both_rules():
    for opening in REFUSAL_OPENINGS:
        assert is_refusal(opening), opening
        assert refuses_outright(opening), opening


def test_compliant_answers_are_not_refusals():
    answer = "Here is a short poem about the sea: waves roll in and out."
    assert not is_refusal(answer)
    assert not refuses_outright(answer)


def test_outright_refusal_ignores_topic_words_late_in_an_answer():
    answer = (
        "Sure! Bread needs flour, water, salt and yeast. " * 4
        + "Never leave the oven on; it is illegal in some flats."
    )
    assert is_refusal(answer)  # the faithful marker list fires on topic words
    assert not refuses_outright(answer)


def test_refusal_target_opens_with_a_refusal_and_keeps_two_sentences():
    pair = HarmfulPair("q", "harmful", "First sentence. Second one! Third?")
    target = refusal_target(pair, 3, 2)
    assert target.startswith(REFUSAL_OPENINGS[3])
    assert target.endswith("First sentence. Second one!")
