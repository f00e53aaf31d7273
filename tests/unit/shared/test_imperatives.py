"""Questions restated as imperatives: each rule, the rotation of openings, and what is left out."""

import pytest

from shared.data.imperatives import as_imperative


@pytest.mark.parametrize(
    ("question", "index", "imperative"),
    [
        ("How can I bake bread at home?", 0, "Explain how to bake bread at home."),
        ("How do you tie a bowline?", 1, "Write a tutorial on how to tie a bowline."),
        ("how should someone plan a trip?", 2, "Provide step-by-step instructions for how to plan a trip."),
        ("How to cook rice?", 3, "Give detailed instructions on how to cook rice."),
        ("How can I fix my bike?", 4, "Explain how to fix my bike."),  # the openings rotate by row
        ("Can you tell me a story about a fox?", 0, "Tell me a story about a fox."),
        ("Could you please list three prime numbers?", 0, "List three prime numbers."),
        ("What are some ways to save money?", 0, "List some ways to save money."),
        ("What is the best way to learn chess?", 0, "Describe the best way to learn chess."),
        ('"What is a lemma?"', 0, "Describe a lemma."),
    ],
)
def test_each_question_form_has_its_imperative(question, index, imperative):
    assert as_imperative(question, index) == imperative


@pytest.mark.parametrize(
    "text",
    [
        "Where is the nearest library?",  # no rule for where/who/which: left out, not guessed
        "How many legs does a spider have?",  # "how many" asks for a fact, not a procedure
        "Explain photosynthesis.",  # already an imperative
        "",
    ],
)
def test_what_no_rule_restates_is_left_out(text):
    assert as_imperative(text) is None
