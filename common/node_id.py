"""A stable id per machine, and the node id of a worker derived from it and its name.

The machine id is 12 random hex digits made once and kept in the user's state directory
(SWARM_STATE_DIR overrides it), so a restarted worker keeps its node id, and two workers
named alike on two hosts stay distinct. It is written atomically and without a race: two
processes starting at once agree on one id. Where the directory cannot be written the
process uses an id of its own for its lifetime, after one warning.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import secrets
import tempfile
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)

STATE_DIR_ENV = "SWARM_STATE_DIR"
FILE_NAME = "node-id"
ID_HEX = 12
_VALID = re.compile(rf"^[0-9a-f]{{{ID_HEX}}}$")


def state_dir() -> Path:
    """Where Swarm keeps state: $SWARM_STATE_DIR, else the state directory systemd gave the
    service ($STATE_DIRECTORY, its first entry), else the platform's place for this user."""
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(os.environ.get(STATE_DIR_ENV) or systemd or platformdirs.user_state_dir("swarm"))


def machine_id(directory: Path | None = None) -> str:
    """This machine's id, made and kept on first use."""
    return _machine_id(Path(directory) if directory is not None else state_dir())


def node_id(name: str, directory: Path | None = None) -> str:
    """A worker's node id: stable for one name on one machine, distinct across machines."""
    digest = hashlib.sha256(f"{machine_id(directory)}\0{name}".encode()).hexdigest()
    return digest[:ID_HEX]


@functools.lru_cache(maxsize=8)
def _machine_id(directory: Path) -> str:
    path = directory / FILE_NAME
    try:
        return _read(path) or _create(path)
    except OSError as e:
        fallback = secrets.token_hex(ID_HEX // 2)
        log.warning("cannot keep a machine id in %s (%s); using %s for this process only, "
                    "so this worker's node id changes when it restarts", directory,
                    e.strerror or e, fallback)
        return fallback


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    if _VALID.match(text):
        return text
    log.warning("%s holds no machine id; making a new one", path)
    path.unlink()
    return None


def _create(path: Path) -> str:
    """Write a new id beside the target, then link it into place: whoever links first wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(ID_HEX // 2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        except OSError:  # a file system without hard links
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    made = _read(path)
    if made is None:
        raise OSError(f"{path} vanished as it was written")
    return made
