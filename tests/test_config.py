"""TOML config files (common/config.py): a file's keys are the command's own options,
checked as strictly as the flags, laid under them; the broker's [peers] table."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from broker.cli import main as broker_main
from broker.peers import PeerSettings, parse_peers
from common.cli_types import bind_endpoint, seconds
from common.config import check, config_option, keyed_params, read_toml, tomllib
from common.errors import ConfigError
from worker.cli import main as worker_main

pytestmark = pytest.mark.timeout(30)
EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


@click.command()
@config_option("demo.toml", tables={"peers": parse_peers}, skip=("dry_run",))
@click.option("--bind", default="tcp://127.0.0.1:7555", callback=bind_endpoint)
@click.option("--timeout-s", type=seconds(), default=60.0)
@click.option("--liveness", type=click.IntRange(min=1), default=3)
@click.option("--model", "model_path", default=None)
@click.option("--peer-timeout", multiple=True)
@click.option("--secure", is_flag=True)
@click.option("--dry-run", is_flag=True)
@click.pass_context
def demo(ctx, config_file, bind, timeout_s, liveness, model_path, peer_timeout, secure, dry_run):
    click.echo(json.dumps({"bind": bind, "timeout_s": timeout_s, "liveness": liveness,
                           "model": model_path, "peer_timeout": list(peer_timeout),
                           "secure": secure, "file": str(config_file.path),
                           "peers": sorted(config_file.table("peers", {}))}))


def run_demo(*args: str):
    return CliRunner().invoke(demo, list(args), prog_name="demo", catch_exceptions=False)


def write(tmp_path: Path, text: str, name: str = "demo.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def one_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("text, why", [
    ("timeout-s = 5\n", "unknown key 'timeout-s' (did you mean 'timeout_s'?)"),
    ("colour = 'red'\n", "unknown key 'colour'"),
    ("dry_run = true\n", "unknown key 'dry_run'"),   # a one-off action is not a setting
    ("timeout_s = 0\n", "key 'timeout_s': 0 is not at least 0.01"),
    ("bind = 'tcp://nowhere'\n", "key 'bind': 'tcp://nowhere' is not a ZeroMQ endpoint"),
    ("liveness = 2.5\n", "key 'liveness': expected a whole number, not 2.5"),
    ("liveness = '3'\n", "key 'liveness': expected a whole number, not \"3\""),
    ("secure = 'yes'\n", "key 'secure': expected true or false, not \"yes\""),
    ("bind = ['a']\n", "key 'bind': expected a string or number, not a list"),
    ("peer_timeout = 'a=1'\n", "key 'peer_timeout': expected a list, not \"a=1\""),
    ("timeout_s = \n", "not valid TOML: "),
    ("[peers.gpu]\nweight = -1\n", "key 'peers.gpu.weight': -1 is not at least 0"),
    ("[peers.gpu]\ntimeout_s = 0\n", "key 'peers.gpu.timeout_s': 0 is not above 0"),
    ("[peers.gpu]\ndisabled = 1\n", "key 'peers.gpu.disabled': expected true or false"),
    ("[peers.gpu]\nwieght = 2\n", "key 'peers.gpu.wieght': unknown"),
    ("peers = 3\n", "key 'peers': expected a table"),
])
def test_a_bad_file_is_one_sentence_naming_the_file_and_the_key(tmp_path, text, why):
    path = write(tmp_path, text)
    line = one_error(run_demo("--config", str(path)))
    assert line.startswith(f"demo: {path}: {why}"), line


def test_a_named_file_that_is_missing_or_unreadable_is_an_error(tmp_path):
    assert one_error(run_demo("--config", str(tmp_path / "no.toml"))) == \
        f"demo: {tmp_path / 'no.toml'}: cannot read it: No such file or directory"
    assert one_error(run_demo("--config", str(tmp_path))).endswith("cannot read it: Is a directory")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe = 1")
    assert one_error(run_demo("--config", str(binary))).endswith("not valid TOML: it is not "
                                                                 "UTF-8 text")


def test_the_file_sets_defaults_and_a_flag_wins_over_it(tmp_path):
    path = write(tmp_path, "bind = 'tcp://127.0.0.1:9001'\ntimeout_s = 7\nliveness = 5\n"
                           "model = '/m.gguf'\npeer_timeout = ['a=3']\nsecure = true\n"
                           "[peers.gpu]\nweight = 2\n")
    out = json.loads(run_demo("--config", str(path), "--timeout-s", "9",
                              "--peer-timeout", "b=4").output)
    assert out == {"bind": "tcp://127.0.0.1:9001", "timeout_s": 9.0, "liveness": 5,
                   "model": "/m.gguf", "peer_timeout": ["b=4"], "secure": True,
                   "file": str(path), "peers": ["gpu"]}


def test_the_default_file_is_in_swarm_config_dir_and_may_be_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARM_CONFIG_DIR", str(tmp_path))
    out = json.loads(run_demo().output)
    assert out["file"] == "None" and out["timeout_s"] == 60.0  # nothing there: defaults
    write(tmp_path, "timeout_s = 12\n")
    out = json.loads(run_demo().output)
    assert out["file"] == str(tmp_path / "demo.toml") and out["timeout_s"] == 12.0


def test_without_swarm_config_dir_systemds_configuration_directory_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv("SWARM_CONFIG_DIR")
    (tmp_path / "first").mkdir()
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", f"{tmp_path / 'first'}:{tmp_path}")
    write(tmp_path / "first", "liveness = 4\n")
    assert json.loads(run_demo().output)["liveness"] == 4


def test_a_bad_default_file_is_as_much_an_error_as_a_named_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARM_CONFIG_DIR", str(tmp_path))
    write(tmp_path, "liveness = 0\n")
    assert "key 'liveness': 0 is not in the range" in one_error(run_demo())


def test_every_option_of_the_daemons_is_a_key_spelt_with_underscores():
    broker = keyed_params(broker_main)
    assert {"bind", "heartbeat_s", "timeout_s", "peer_timeout", "http", "api_key", "swarm",
            "state_dir", "history_size", "web",
            "no_mdns", "secure", "key_dir", "allowed_keys", "verbose"} <= set(broker)
    assert not {"config", "help", "version"} & set(broker)
    worker = keyed_params(worker_main, ("print_profile", "as_json"))
    assert {"broker", "name", "model", "backend", "instances", "gpu_layers", "threads",
            "n_ctx", "heartbeat_s", "seed_variation", "timeout_hint_s"} <= set(worker)
    assert worker["model"].name == "model_path"
    assert not {"print_profile", "json", "config"} & set(worker)


@pytest.mark.parametrize("command, name, tables, skip", [
    (broker_main, "broker.toml", {"peers": parse_peers}, ()),
    (worker_main, "worker.toml", {}, ("print_profile", "as_json")),
])
def test_the_example_files_in_the_docs_are_valid(command, name, tables, skip):
    path = EXAMPLES / name
    found = check(read_toml(path), click.Context(command), path, tables, skip)
    assert found.values and found.path == path
    if name == "broker.toml":
        assert found.table("peers") == {"gpu-box": PeerSettings(90.0, 2.0, False),
                                        "old-laptop": PeerSettings(None, 1.0, True)}
    else:
        assert found.values["instances"] == 2 and found.values["model_path"].endswith(".gguf")


def test_the_worker_takes_instances_as_auto_or_a_whole_number(tmp_path):
    ctx = click.Context(worker_main)
    skip = ("print_profile", "as_json")
    for value in ('"auto"', "3"):
        check({"instances": json.loads(value)}, ctx, tmp_path, {}, skip)
    with pytest.raises(ConfigError, match="key 'instances': --instances must be auto or a whole "
                                          "number from 1 to 64, not 0"):
        check({"instances": 0}, ctx, tmp_path, {}, skip)


def test_the_examples_in_the_operations_guide_are_valid(tmp_path):
    text = (EXAMPLES.parent / "operations.md").read_text()
    section = text.split("## Configuration files", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```toml\n")[1:]]
    assert len(blocks) == 2
    broker = check(tomllib.loads(blocks[0]), click.Context(broker_main), tmp_path,
                   {"peers": parse_peers})
    worker = check(tomllib.loads(blocks[1]), click.Context(worker_main), tmp_path, {},
                   ("print_profile", "as_json"))
    assert broker.table("peers")["gpu-box"].weight == 2.0 and worker.values["instances"] == 2
