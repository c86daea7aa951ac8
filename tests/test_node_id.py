"""The machine id kept in the state directory, and the node ids derived from it."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest

from common import node_id


def test_stable_for_one_directory_distinct_for_two(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    first = node_id.machine_id(a)
    assert re.fullmatch(r"[0-9a-f]{12}", first)
    assert node_id.machine_id(a) == first
    assert (a / "node-id").read_text().strip() == first
    assert node_id.machine_id(b) != first
    assert node_id.node_id("w", a) == node_id.node_id("w", a)
    assert node_id.node_id("w", a) != node_id.node_id("w", b)   # same name, two hosts
    assert node_id.node_id("w", a) != node_id.node_id("w2", a)  # two names, one host


def test_a_new_process_reads_the_same_id(tmp_path):
    """What a restarted worker sees: the id on disk, not a fresh one."""
    code = "from common.node_id import node_id; print(node_id('w'))"
    env = {**os.environ, "SWARM_STATE_DIR": str(tmp_path)}
    ids = {subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() for _ in range(2)}
    assert len(ids) == 1 and re.fullmatch(r"[0-9a-f]{12}", ids.pop())


def test_a_damaged_file_is_replaced(tmp_path, caplog):
    (tmp_path / "node-id").write_text("not an id\n")
    made = node_id.machine_id(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{12}", made)
    assert (tmp_path / "node-id").read_text().strip() == made
    assert "holds no machine id" in caplog.text


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_an_unwritable_directory_falls_back_with_one_warning(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a directory below a plain file can never be made, even by root
    caplog.set_level(logging.WARNING, logger="common.node_id")
    first = node_id.machine_id(blocker / "state")
    assert re.fullmatch(r"[0-9a-f]{12}", first)
    assert node_id.machine_id(blocker / "state") == first  # one id for the whole process
    warnings = [r for r in caplog.records if "for this process only" in r.getMessage()]
    assert len(warnings) == 1


def test_state_dir_env_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARM_STATE_DIR", str(tmp_path / "s"))
    assert node_id.state_dir() == tmp_path / "s"
    monkeypatch.delenv("SWARM_STATE_DIR")
    assert "swarm" in str(node_id.state_dir())
