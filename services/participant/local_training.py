"""Local training of a participant: the honest client trainer (`shared/client_training.py`: Alpaca template,
response-only loss, layer-0 B snapshots) over the participant's own rows, loaded once, with a progress bar
per round."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from services.participant.api_client import Stopped, Task
from shared.config import LocalTrainingConfig, LoraSettings
from shared.updates import ClientUpdate, decode_lora_state

if TYPE_CHECKING:
    from shared.client_training import HonestTrainer


class LocalTrainer:
    def __init__(
        self,
        client_id: str,
        rows: list[tuple[str, str]],
        seed: int,
        stop: threading.Event,
        torch_threads: int | None = None,
        progress: bool = True,
    ) -> None:
        self.client_id, self.rows, self.seed, self.stop = client_id, rows, seed, stop
        self.torch_threads, self.progress = torch_threads, progress
        self._trainer: HonestTrainer | None = None  # built on the first task (it names the model and LoRA)
        self._model: tuple[str, LoraSettings] | None = None

    def _trainer_for(self, task: Task, training: LocalTrainingConfig) -> HonestTrainer:
        from shared.client_training import HonestTrainer
        from shared.model_zoo import load_base_model

        lora = LoraSettings.model_validate(task.lora)
        if self._model is not None and self._model != (task.model, lora):
            raise RuntimeError(
                f"the federation changed its model or LoRA mid-run ({self._model[0]} -> {task.model}): "
                "restart the participant"
            )
        if self._trainer is None:
            base = load_base_model(task.model)
            self._trainer = HonestTrainer(
                self.client_id, self.rows, base.model, base.tokenizer, lora, training, self.seed
            )
            self._model = (task.model, lora)
        elif self._trainer.training != training:
            if self._trainer.training.max_seq_len != training.max_seq_len:
                raise RuntimeError("the federation changed max_seq_len mid-run; restart the participant")
            self._trainer.training = training
        return self._trainer

    def train(self, task: Task, global_blob: bytes) -> ClientUpdate:
        """This round's update from the global adapter it was told to start from."""
        import torch
        from tqdm import tqdm

        assert task.round_index is not None and task.lr is not None
        training = LocalTrainingConfig.model_validate(task.training)
        if self.torch_threads is not None:
            training = training.model_copy(update={"torch_threads": self.torch_threads})
        torch.set_num_threads(training.torch_threads)
        trainer = self._trainer_for(task, training)
        shadow = task.shadow and training.shadow_lr is not None
        total = training.local_steps * (2 if shadow else 1)
        bar = tqdm(
            total=total, desc=f"round {task.round_index}", unit="step", disable=not self.progress, leave=False
        )

        def step(loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if self.stop.is_set():
                raise Stopped()  # between steps: nothing half-written, the round trains again on restart

        trainer.on_step = step
        try:
            return trainer.train_round(decode_lora_state(global_blob), task.round_index, task.lr, shadow)
        finally:
            trainer.on_step = None
            bar.close()
