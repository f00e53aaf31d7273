"""The participant's credentials: its client id and bearer token, in a file only its owner can read."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path


class CredentialsError(Exception):
    pass


@dataclass(frozen=True)
class Credentials:
    server: str
    client_id: str
    token: str


def save_credentials(path: Path, credentials: Credentials) -> None:
    """Written 0600 from the first byte (never world-readable, not even briefly), then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the umask cannot widen it; an existing file keeps no looser mode
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(credentials), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load_credentials(path: Path) -> Credentials | None:
    """The stored credentials, None if there are none; refused if others may read them (as ssh does)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(f"{path} is readable by others (mode {oct(mode & 0o777)}): chmod 600 it")
    try:
        fields = json.loads(path.read_text())
        return Credentials(str(fields["server"]), str(fields["client_id"]), str(fields["token"]))
    except (ValueError, KeyError, TypeError) as error:
        raise CredentialsError(f"{path} is not a credentials file: {type(error).__name__}") from error
