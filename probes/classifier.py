"""The LoRA-Probe classifier: logistic regression (one linear layer) trained as the official code does.

BCE-with-logits with pos_weight = #neg/#pos, AdamW (lr 0.01, weight decay 2.0), batch 256, at most 100
epochs, early stopping (patience 15 on validation loss, improvement > 1e-4, best state restored), gradient
clipping 0.5. Unlike the official code, the validation split is seeded and by trajectory.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field


class ProbeTrainingConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(2.0, ge=0)
    batch_size: int = Field(256, ge=1)
    max_epochs: int = Field(100, ge=1)
    patience: int = Field(15, ge=1)
    min_improvement: float = 1e-4
    grad_clip: float = Field(0.5, gt=0)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    threshold: float = Field(0.8, gt=0, lt=1)
    seed: int = 2023


class LogisticProbe(torch.nn.Module):
    """s = sigmoid(a^T x + c) on already-normalised features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


def split_by_trajectory(
    trajectory: np.ndarray, fraction: float, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (first, second): whole trajectories go to `second` with the given share, per class."""
    rng = np.random.default_rng(seed)
    second = np.zeros(len(trajectory), dtype=bool)
    groups = (
        [np.unique(trajectory)]
        if labels is None
        else [np.unique(trajectory[labels == c]) for c in np.unique(labels)]
    )
    for ids in groups:
        # at least one trajectory per class when asked for a share and the class can spare one: the
        # threshold is calibrated on the held-out benign ones
        count = round(len(ids) * fraction)
        if fraction > 0 and count == 0 and len(ids) >= 2:
            count = 1
        take = rng.permutation(ids)[:count]
        second |= np.isin(trajectory, take)
    return ~second, second


def train_probe(
    features: np.ndarray, labels: np.ndarray, trajectory: np.ndarray, config: ProbeTrainingConfig
) -> tuple[LogisticProbe, dict]:
    """Train on normalised features; returns the best model and a training log."""
    if len(np.unique(labels)) < 2:
        raise ValueError("the probe needs benign and malicious samples")
    torch.manual_seed(config.seed)
    train_mask, val_mask = split_by_trajectory(trajectory, config.val_fraction, config.seed, labels)
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y = torch.from_numpy(labels.astype(np.float32))
    x_train, y_train, x_val, y_val = x[train_mask], y[train_mask], x[val_mask], y[val_mask]
    positives = float(y_train.sum())
    pos_weight = torch.tensor((len(y_train) - positives) / max(positives, 1.0))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    model = LogisticProbe(x.shape[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_loss, best_state, stale, epochs_run = float("inf"), None, 0, 0
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(1, config.max_epochs + 1):
        epochs_run = epoch
        model.train()
        for batch in torch.randperm(len(y_train), generator=generator).split(config.batch_size):
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            monitor = (x_val, y_val) if len(y_val) else (x_train, y_train)
            val_loss = float(loss_fn(model(monitor[0]), monitor[1]))
        if val_loss < best_loss - config.min_improvement:
            best_loss, stale = val_loss, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    log = {
        "epochs": epochs_run,
        "best_val_loss": best_loss,
        "n_train": int(train_mask.sum()),
        "n_val": int(val_mask.sum()),
    }
    return model, log


def predict(model: LogisticProbe, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return (
            torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))))
            .float()
            .numpy()
        )
