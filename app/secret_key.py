"""The key that signs session cookies: TAILOR_SECRET_KEY when set, else a random key made on the
first start and kept in DATA_DIR/secret_key, readable only by its owner. There is no built-in key:
every install signs with a secret of its own."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

KEY_FILE_NAME = "secret_key"
MIN_KEY_LENGTH = 32
log = logging.getLogger("tailor.secret_key")


class SecretKeyError(RuntimeError):
    """The key file cannot be used (unreadable, empty, or too short)."""


def load_or_create_secret_key(data_dir: Path) -> str:
    """The key stored in `data_dir`, created there first if none exists yet.

    Creation is atomic and exclusive: the key is written to a private temporary file and hard-linked
    into place, so processes starting together (web workers, CLI) all end up with the same key and
    none ever reads a half-written file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        _create(path)
    _restrict_permissions(path)
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < MIN_KEY_LENGTH:
        raise SecretKeyError(
            f"The secret key in {path} is missing or shorter than {MIN_KEY_LENGTH} characters. "
            "Delete the file to have a new one made (every signed-in user is then signed out), or set TAILOR_SECRET_KEY."
        )
    return key


def _create(path: Path) -> None:
    temporary = path.with_name(f".{KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails if another process published its key first: use theirs
            log.info("Created a new secret key in %s", path)
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)


def _restrict_permissions(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("The secret key file %s was readable by others (mode %o); restricting it to its owner.", path, mode)
        path.chmod(0o600)
