"""--model PATH as a phone or a shell gives it: `~` with the environment's HOME, and on
Android /sdcard and /storage/emulated/0 (one storage, two mounts) mapped to the one that
holds the file. Temporary folders stand for the two mounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ModelError
from worker import model_files
from worker.model_files import normalise_model_path, resolve_model

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def mounts(tmp_path, monkeypatch):
    """(emulated, sdcard, home): stand-ins for /storage/emulated/0, /sdcard and $HOME."""
    emulated, sdcard, home = tmp_path / "storage/emulated/0", tmp_path / "sdcard", tmp_path / "home"
    for d in (emulated, sdcard, home):
        d.mkdir(parents=True)
    monkeypatch.setattr(model_files, "ANDROID_SHARED_ROOTS", (emulated, sdcard))
    return emulated, sdcard, home


def put(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF")
    return path


def test_tilde_expands_with_the_environments_home(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert normalise_model_path("~/models/m.gguf", env, android=False) == tmp_path / "models/m.gguf"
    assert normalise_model_path("~", env, android=True) == tmp_path


def test_off_android_a_sdcard_path_is_left_alone(mounts):
    emulated, sdcard, _ = mounts
    put(emulated / "m.gguf")
    assert normalise_model_path(str(sdcard / "m.gguf"), {}, android=False) == sdcard / "m.gguf"


def test_on_android_sdcard_maps_to_the_emulated_mount_that_holds_the_file(mounts):
    emulated, sdcard, _ = mounts
    target = put(emulated / "Download/m.gguf")
    assert normalise_model_path(str(sdcard / "Download/m.gguf"), {}, android=True) == target


def test_on_android_the_emulated_path_maps_back_to_sdcard(mounts):
    emulated, sdcard, _ = mounts
    target = put(sdcard / "m.gguf")
    assert normalise_model_path(str(emulated / "m.gguf"), {}, android=True) == target


def test_a_file_where_it_was_given_stays_there(mounts):
    emulated, sdcard, _ = mounts
    put(emulated / "m.gguf")
    given = put(sdcard / "m.gguf")
    assert normalise_model_path(str(given), {}, android=True) == given


def test_termux_shared_link_maps_to_the_emulated_mount_before_termux_setup_storage(mounts):
    emulated, _, home = mounts
    target = put(emulated / "models/m.gguf")
    env = {"HOME": str(home)}
    assert normalise_model_path("~/storage/shared/models/m.gguf", env, android=True) == target


def test_injected_roots_replace_the_defaults(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    target = put(b / "m.gguf")
    assert normalise_model_path(str(a / "m.gguf"), {}, True, shared_roots=[a, b]) == target


def test_a_missing_file_under_an_absent_mount_is_tried_under_one_that_exists(mounts, tmp_path):
    emulated, sdcard, _ = mounts
    sdcard.rmdir()  # Termux: /sdcard not visible
    assert normalise_model_path(str(sdcard / "m.gguf"), {}, android=True) == emulated / "m.gguf"


def test_resolve_model_finds_an_android_file_through_the_other_mount(mounts):
    emulated, sdcard, _ = mounts
    target = put(emulated / "m.gguf")
    assert resolve_model(str(sdcard / "m.gguf"), android=True, env={}) == target


def test_the_missing_file_error_names_the_path_given_and_the_one_tried(tmp_path):
    with pytest.raises(ModelError) as e:
        resolve_model("~/models/none.gguf", env={"HOME": str(tmp_path)})
    assert str(e.value) == ("model ~/models/none.gguf does not exist "
                            f"(tried {tmp_path}/models/none.gguf)")


def test_the_missing_file_error_on_android_says_what_to_run(mounts):
    emulated, sdcard, _ = mounts
    sdcard.rmdir()
    with pytest.raises(ModelError) as e:
        resolve_model(str(sdcard / "none.gguf"), android=True, env={})
    assert str(e.value) == (f"model {sdcard}/none.gguf does not exist "
                            f"(tried {emulated}/none.gguf); under Termux, run termux-setup-storage "
                            "to let it read shared storage")


def test_an_existing_file_resolves_as_before(tmp_path):
    target = put(tmp_path / "m.gguf")
    assert resolve_model(str(target)) == target
    with pytest.raises(ModelError, match=f"model {tmp_path}/x.gguf does not exist$"):
        resolve_model(str(tmp_path / "x.gguf"))
