"""Shared-prompt packing: what each token may see, where it sits, and which position predicts it."""

import numpy as np
import pytest

from shared.audit.packing import PackedCanary, collate_packed, pack
from shared.prompting import IGNORE_INDEX, TokenizedExample


def _example(prompt: list[int], answer: list[int]) -> TokenizedExample:
    return TokenizedExample(tuple(prompt + answer), tuple([IGNORE_INDEX] * len(prompt) + answer))


def test_pack_keeps_one_prompt_and_both_continuations():
    packed = pack(_example([1, 2, 3], [10, 11]), _example([1, 2, 3], [20, 21, 22]))
    assert packed == PackedCanary((1, 2, 3), (10, 11), (20, 21, 22))
    assert packed.length == 8


@pytest.mark.parametrize(
    ("compliant", "refusal"),
    [
        (_example([1, 2, 3], [10]), _example([1, 2, 4], [20])),  # another prompt
        (_example([1, 2, 3], [10]), _example([1, 2], [3, 20])),  # same ids, another prompt boundary
        (_example([], [10]), _example([], [20])),  # nothing to predict the first token from
    ],
)
def test_pack_rejects_continuations_of_different_prompts(compliant, refusal):
    with pytest.raises(ValueError):
        pack(compliant, refusal)


def test_collate_masks_positions_and_predictors():
    batch = collate_packed([PackedCanary((1, 2), (10, 11), (20, 21, 22)), PackedCanary((5,), (6,), (7,))], 0)
    assert batch.input_ids.tolist() == [[1, 2, 10, 11, 20, 21, 22], [5, 6, 7, 0, 0, 0, 0]]
    # the refusal restarts where the prompt ends, as if the compliant tokens were not there
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 2, 3, 4], [0, 1, 1, 0, 0, 0, 0]]
    mask = batch.attention_mask[:, 0].numpy().astype(int)
    assert mask[0].tolist() == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 1, 0, 0],  # refusal: the prompt and itself, never the compliant tokens
        [1, 1, 0, 0, 1, 1, 0],
        [1, 1, 0, 0, 1, 1, 1],
    ]
    assert mask[1][:3].tolist() == [[1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0]]
    assert np.diag(mask[1]).all()  # padding rows attend to themselves only: no all-masked softmax row
    assert mask[1][3:, :3].sum() == 0
    # the last prompt token predicts both first tokens
    (pc, pr), (qc, qr) = batch.predictors
    assert pc.tolist() == [1, 2] and pr.tolist() == [1, 4, 5]
    assert qc.tolist() == [0] and qr.tolist() == [0]
    assert [t.tolist() for t in batch.targets[0]] == [[10, 11], [20, 21, 22]]
