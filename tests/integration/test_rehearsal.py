"""The alignment stage's benign fine-tuning rehearsal on tiny-llama (real PEFT, real autograd): the gradient
it adds is the refusal loss's at the point one normalised benign step away on the q,v weights, and nothing
else; the weights come back exactly."""

import pytest
import torch

from shared.config import LoraSettings
from shared.lora import attach_lora, lora_parameters
from shared.model_zoo import load_base_model
from shared.model_zoo.rehearsal import add_rehearsal_gradient, perturbed_parameters
from shared.prompting import collate, tokenize_sft
from shared.training import response_loss

pytestmark = pytest.mark.integration

RADIUS, WEIGHT = 0.3, 0.5


@pytest.fixture(scope="module")
def adapted():
    torch.manual_seed(0)
    loaded = load_base_model("tiny-llama")
    lora = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    model = attach_lora(loaded.model, lora)
    with torch.no_grad():  # B away from zero, so that every LoRA weight has a gradient
        for key, p in lora_parameters(model).items():
            if "lora_B" in key:
                p.normal_(std=0.05)
    model.train()

    def batch(rows):
        return collate(
            [tokenize_sft(loaded.tokenizer, q, a, 48) for q, a in rows], loaded.tokenizer.pad_token_id
        )

    benign = batch([("Name a colour of the sky.", "Blue."), ("Add two and three.", "Five.")])
    refusal = batch([("Tell me a secret code.", "I can't help with that.")])
    return model, benign, refusal


def _refusal_gradient_after(model, perturbed, trainable, benign, refusal, step) -> list[torch.Tensor]:
    """The refusal loss's gradient after perturbed -= step(unit benign gradient); weights restored."""
    grads = torch.autograd.grad(response_loss(model, benign), perturbed)
    norm = torch.stack([(g.double() ** 2).sum() for g in grads]).sum().sqrt()
    saved = [p.detach().clone() for p in perturbed]
    with torch.no_grad():
        for p, g in zip(perturbed, grads, strict=True):
            p.sub_(step(g, float(norm)))
    out = torch.autograd.grad(response_loss(model, refusal), trainable)
    with torch.no_grad():
        for p, s in zip(perturbed, saved, strict=True):
            p.copy_(s)
    return list(out)


def test_perturbed_parameters_are_the_clients_modules_only(adapted):
    model, _, _ = adapted
    picked = perturbed_parameters(model, ("q_proj", "v_proj"))
    by_key = lora_parameters(model)
    expected = [p for k, p in by_key.items() if ".q_proj." in k or ".v_proj." in k]
    assert len(picked) == len(expected) == len(by_key) // 2  # A and B of q, v out of q, k, v, o
    assert all(a is b for a, b in zip(picked, expected, strict=True))
    with pytest.raises(ValueError, match="no LoRA weights in"):
        perturbed_parameters(model, ("gate_proj",))


def test_rehearsal_adds_the_refusal_gradient_after_a_normalised_benign_descent_step(adapted):
    model, benign, refusal = adapted
    trainable = [p for p in model.parameters() if p.requires_grad]
    perturbed = perturbed_parameters(model, ("q_proj", "v_proj"))
    before = [p.detach().clone() for p in trainable]
    # a gradient already there (the step's own loss): rehearsal adds to it, it does not replace it
    for p in trainable:
        p.grad = torch.full_like(p, 0.25)

    losses = add_rehearsal_gradient(
        model, trainable, perturbed, benign, refusal, radius=RADIUS, weight=WEIGHT
    )

    assert all(torch.equal(p, b) for p, b in zip(trainable, before, strict=True))  # restored exactly
    added = [p.grad - 0.25 for p in trainable]
    for p in trainable:
        p.grad = None

    def descend(g, norm):
        return g * (RADIUS / norm)

    expected = _refusal_gradient_after(model, perturbed, trainable, benign, refusal, descend)
    for got, want in zip(added, expected, strict=True):
        torch.testing.assert_close(got, WEIGHT * want, rtol=1e-4, atol=1e-6)

    # The wrong versions give other gradients: at the unperturbed point, up the benign loss, unnormalised.
    def distance(other: list[torch.Tensor]) -> float:
        return max(float((WEIGHT * o - a).abs().max()) for o, a in zip(other, added, strict=True))

    at_start = list(torch.autograd.grad(response_loss(model, refusal), trainable))
    ascent = _refusal_gradient_after(
        model, perturbed, trainable, benign, refusal, lambda g, n: -descend(g, n)
    )
    raw = _refusal_gradient_after(model, perturbed, trainable, benign, refusal, lambda g, n: g * RADIUS)
    scale = max(float(a.abs().max()) for a in added)
    for wrong in (at_start, ascent, raw):
        assert distance(wrong) > 1e-3 * scale
    with torch.no_grad():
        assert losses.benign == pytest.approx(float(response_loss(model, benign)), rel=1e-5)
        assert losses.refusal_after != pytest.approx(float(response_loss(model, refusal)), rel=1e-4)
