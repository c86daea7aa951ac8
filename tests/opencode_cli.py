"""The real opencode CLI for the end-to-end test: installed once from npm, run contained.

`install()` puts the pinned npm package `opencode-ai` into the user cache
(~/.cache/swarm-tests/opencode/VERSION), once; a later run finds it there and touches no
network. `python -m tests.opencode_cli` does the same ahead of a test run.

`contained_env()` and `write_project()` keep opencode on loopback and away from the user's
own files (checked with opencode 1.18.33 in a network namespace that holds only `lo`, with a
DNS logger and strace: its only connection was to the swarm's HTTP port):
- HOME and the XDG directories are scratch directories: no user config is read or written;
- the OPENCODE_DISABLE_* flags stop the models.dev fetch, auto-update, sharing, LSP
  downloads, default plugins and the Claude Code fallbacks; auto-compaction is off too, so
  a "context_length_exceeded" ends the run with its message instead of a compaction loop;
- opencode installs @opencode-ai/plugin into its config directory in the background (npm
  registry traffic) unless that directory already has node_modules and a lock file that
  lists it: `seed_config_dir` writes those;
- every tool asks permission, which `opencode run` refuses: all ten tools are still sent to
  the model, but none runs (glob and grep would download ripgrep, webfetch and bash could
  reach anything).
The provider @ai-sdk/openai-compatible is built into the opencode binary: nothing is
installed at run time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import platformdirs

VERSION = "1.18.33"
PACKAGE = f"opencode-ai@{VERSION}"
INSTALL_TIMEOUT_S = 900.0  # the package carries a ~180 MB binary
DONE = ".installed"
ASK_ALL = {"*": "ask"}


class OpencodeUnavailable(Exception):
    """opencode cannot be installed here (no node/npm, or the registry cannot be reached)."""


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("swarm-tests")) / "opencode" / VERSION


def _binary(root: Path) -> Path | None:
    """The opencode executable under an npm prefix whose --version is ours, if any."""
    modules = root / "node_modules"
    candidates = [modules / ".bin" / "opencode", *sorted(modules.glob("opencode-*/bin/opencode"))]
    for path in candidates:
        try:
            r = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60,
                               env=contained_env(root / "probe-home"))
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0 and r.stdout.strip() == VERSION:
            return path
    return None


def install() -> Path:
    """The pinned opencode executable, installed into the user cache on first use."""
    root = cache_dir()
    if (root / DONE).exists() and (found := _binary(root)):
        return found
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        raise OpencodeUnavailable("node and npm are needed to install opencode (npm package opencode-ai)")
    staging = root.with_name(f"{VERSION}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        r = subprocess.run([npm, "install", "--prefix", str(staging), "--no-audit", "--no-fund",
                            "--loglevel=error", PACKAGE], capture_output=True, text=True,
                           timeout=INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise OpencodeUnavailable(f"npm install {PACKAGE} took over {INSTALL_TIMEOUT_S:.0f} s") from e
    if r.returncode != 0 or not _binary(staging):
        last = (r.stderr.strip().splitlines() or ["no opencode binary after the install"])[-1]
        shutil.rmtree(staging, ignore_errors=True)
        raise OpencodeUnavailable(f"could not install {PACKAGE} from the npm registry: {last}")
    (staging / DONE).touch()
    shutil.rmtree(root, ignore_errors=True)
    staging.replace(root)
    return _binary(root) or root / "node_modules" / ".bin" / "opencode"


def contained_env(home: Path) -> dict[str, str]:
    """An environment for opencode: scratch HOME and XDG dirs, no update/fetch/share."""
    dirs = {"HOME": home, "XDG_CONFIG_HOME": home / ".config", "XDG_DATA_HOME": home / ".local/share",
            "XDG_CACHE_HOME": home / ".cache", "XDG_STATE_HOME": home / ".local/state"}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    flags = ("AUTOUPDATE", "MODELS_FETCH", "SHARE", "LSP_DOWNLOAD", "DEFAULT_PLUGINS",
             "CLAUDE_CODE", "AUTOCOMPACT")
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "TERM": "dumb",
            "NO_COLOR": "1", **{k: str(v) for k, v in dirs.items()},
            **{f"OPENCODE_DISABLE_{flag}": "1" for flag in flags}}


def seed_config_dir(home: Path) -> None:
    """What opencode's background `npm install @opencode-ai/plugin` checks: already done."""
    config = home / ".config" / "opencode"
    (config / "node_modules").mkdir(parents=True, exist_ok=True)
    deps = {"@opencode-ai/plugin": VERSION}
    (config / "package.json").write_text(json.dumps({"dependencies": deps}))
    (config / "package-lock.json").write_text(
        json.dumps({"lockfileVersion": 3, "packages": {"": {"dependencies": deps}}}))


def provider_config(base_url: str, output_tokens: int, swarm: dict | None = None) -> dict:
    """The opencode.json that points opencode at the swarm (the README's block)."""
    model: dict = {"name": "Swarm", "limit": {"context": 32768, "output": output_tokens}}
    if swarm:
        model["options"] = {"swarm": swarm}
    return {"$schema": "https://opencode.ai/config.json",
            "provider": {"swarm": {"npm": "@ai-sdk/openai-compatible", "name": "Swarm",
                                   "options": {"baseURL": base_url},
                                   "models": {"swarm": model}}},
            "permission": ASK_ALL}


def write_project(root: Path, config: dict) -> Path:
    project = root / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "opencode.json").write_text(json.dumps(config, indent=2))
    return project


if __name__ == "__main__":
    try:
        print(install())
    except OpencodeUnavailable as e:
        sys.exit(str(e))
