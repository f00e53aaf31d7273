"""Settings of a participant (SAFE_FEDLLM_PARTICIPANT_* environment variables, or the command's options)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ParticipantSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAFE_FEDLLM_PARTICIPANT_", extra="ignore")

    server: str = Field(description="The aggregator's base URL (https://..., or http:// with insecure_http).")
    client_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="This participant's id.")
    data: Path | None = Field(
        None, description="Training data: a JSONL/JSON file of instruction/response rows, or a directory."
    )
    state_dir: Path = Field(
        Path(".safe-fedllm-client"),
        description="Credentials (0600) and the pending update of the current round (resumable).",
    )
    enrollment_token: str | None = Field(None, description="The operator's single-use enrollment token.")
    ca_bundle: Path | None = Field(None, description="CA certificates to verify the server with.")
    insecure_http: bool = Field(False, description="Allow a plain http:// server (tests, a trusted LAN).")
    poll_interval_s: float = Field(5.0, gt=0, description="How often to ask for the task while waiting.")
    max_backoff_s: float = Field(60.0, gt=0, description="Longest wait between retries (503/429/network).")
    timeout_s: float = Field(120.0, gt=0, description="HTTP timeout of one request.")
    seed: int = Field(2023, description="Seeds this participant's round subsets and dropout.")
    torch_threads: int | None = Field(None, ge=1, description="Intra-op threads (default: the task's).")
    until_round: int | None = Field(
        None, ge=0, description="Exit once this round has closed (default: run until stopped)."
    )
    progress: bool = Field(True, description="A progress bar while training.")

    @model_validator(mode="after")
    def _transport(self) -> ParticipantSettings:
        if self.server.startswith("http://") and not self.insecure_http:
            raise ValueError(
                f"{self.server} is plain http: the token and the adapter would travel unencrypted; "
                "use https (with --ca-bundle for a private CA) or pass --insecure-http"
            )
        if not self.server.startswith(("http://", "https://")):
            raise ValueError(f"server must be an http(s) URL, got {self.server!r}")
        return self

    @property
    def credentials_path(self) -> Path:
        return self.state_dir / "credentials.json"
