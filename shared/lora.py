"""LoRA adapters on a torch model (PEFT): creation with a fixed init, state extraction and loading."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from transformers import LlamaForCausalLM, PreTrainedModel

from shared.config import LoraSettings
from shared.lora_state import LoraState, LoraStateError, validate_lora_state
from shared.prompting import IGNORE_INDEX

# A causal LM, bare or LoRA-wrapped (PeftModel forwards generation and the forward pass to its base).
CausalModel = PreTrainedModel | PeftModel


def causal_lm_of(model: CausalModel) -> LlamaForCausalLM:
    """The Llama causal LM itself: under a LoRA wrapper its layers carry the adapter in place."""
    return cast(LlamaForCausalLM, model.get_base_model() if isinstance(model, PeftModel) else model)


def labelled_logits(
    model: CausalModel, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, targets, labelled) of a collated batch under teacher forcing: float32 next-token logits at
    the positions whose next token is labelled (a response token), those tokens, and the [B, T-1] mask that
    picks them. The vocabulary projection runs there only: prompts and padding are most positions, and on a
    small model with a large vocabulary the projection is most of a forward pass (SmolLM2: a fifth)."""
    causal_lm = causal_lm_of(model)
    hidden = causal_lm.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state[:, :-1]
    targets = batch["labels"][:, 1:]
    labelled = targets != IGNORE_INDEX
    return causal_lm.lm_head(hidden[labelled]).float(), targets[labelled], labelled


def peft_lora_config(settings: LoraSettings) -> LoraConfig:
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach_lora(model: PreTrainedModel, settings: LoraSettings) -> PeftModel:
    """Wrap `model` with a fresh adapter: A drawn from `settings.init_seed`, B zero (PEFT's init)."""
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(settings.init_seed)
    try:
        peft_model = get_peft_model(model, peft_lora_config(settings))
    finally:
        torch.random.set_rng_state(rng_state)
    assert isinstance(peft_model, PeftModel)
    return peft_model


def get_lora_state(peft_model: PeftModel) -> LoraState:
    """A detached float32 copy of the adapter weights, keyed as PEFT saves them."""
    # save_embedding_layers=False: embeddings are never targeted, and "auto" would look the base up on the Hub
    state = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    return {
        key: value.detach().to("cpu", torch.float32).numpy().copy() for key, value in sorted(state.items())
    }


def lora_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The live LoRA parameters by adapter-state key (PEFT's names with the adapter name dropped)."""
    adapter = getattr(model, "active_adapter", "default")
    return {n.replace(f".{adapter}.", "."): p for n, p in model.named_parameters() if "lora_" in n}


def set_lora_state(peft_model: PeftModel, state: Mapping[str, np.ndarray]) -> None:
    validate_lora_state(state, get_lora_state(peft_model))
    tensors = {
        key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for key, value in state.items()
    }
    result = set_peft_model_state_dict(peft_model, tensors)
    unexpected: list[str] = result.unexpected_keys  # type: ignore[attr-defined]  # PEFT's stub: namedtuple?
    if unexpected:
        raise LoraStateError(f"PEFT did not accept keys {unexpected[:3]}")
