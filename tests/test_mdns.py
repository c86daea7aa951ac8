"""The mDNS TXT codec and names, pure: what we advertise, and what a stranger's record does."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings, strategies as st

from common import mdns
from common.errors import ConfigError
from common.hardware import MAX_GPUS, Gpu, Hardware
from common.profile import WorkerProfile

ZEROCONF_MAX_PACKET = 8966  # zeroconf's _MAX_MSG_ABSOLUTE: a record must fit one packet


def full_profile(**changes) -> WorkerProfile:
    hw = Hardware(os="Linux", arch="x86_64", platform="linux", chip="AMD EPYC 7763",
                  cores_physical=8, cores_logical=16, ram_total_mb=64000, ram_available_mb=51000,
                  gpus=(Gpu(0, "NVIDIA GeForce RTX 4090", 24564, 23000, "8.9"),
                        Gpu(1, "Tesla P40", 24576, 1200, "6.1")),
                  gpu_driver="550.54.15", gpu_offload=True)
    p = WorkerProfile(name="gpu-box", node_id="0123456789ab", host="gpu-box.lan",
                      backend="llama.cpp", model="gemma-3-270m-q4_k_m.gguf", slots=2,
                      seed_variation=True, gpu_layers=-1, swarm="lab", hardware=hw)
    return WorkerProfile(**{**{f: getattr(p, f) for f in p.__slots__}, **changes})


def encoded(txt: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in txt.items()}


def test_a_full_profile_with_two_gpus_comes_back_whole():
    profile = full_profile()
    advert = mdns.worker_from_txt(encoded(mdns.worker_txt(profile)), ["10.0.0.7"], 5.0)
    assert advert is not None
    assert advert.profile == profile
    assert advert.addresses == ("10.0.0.7",) and advert.seen_at == 5.0


def test_apple_and_termux_flags_and_a_non_nvidia_gpu_come_back():
    hw = Hardware(os="Darwin", arch="arm64", platform="macos", apple_silicon=True,
                  unified_memory=True, chip="Apple M2 Pro", gpus=(Gpu(0, "Apple M2 Pro", 32768,
                                                                      30000, "", "apple"),))
    phone = Hardware(os="Linux", arch="aarch64", platform="android", termux=True)
    for hardware in (hw, phone):
        profile = full_profile(hardware=hardware, gpu_layers=0)
        assert mdns.worker_from_txt(encoded(mdns.worker_txt(profile))).profile == profile


def test_every_string_fits_255_bytes_with_absurd_names_and_sixteen_gpus():
    long = "Ü" * 400 + "|x"
    gpus = tuple(Gpu(i, long[:128], 10**9, 10**9, "9.0", "v|" * 100) for i in range(MAX_GPUS))
    hw = Hardware(os=long[:128], arch=long[:128], platform="linux", chip=long[:128], gpus=gpus,
                  gpu_driver=long[:128])
    profile = WorkerProfile(name=long[:256], node_id="f" * 64, host=long[:256], model=long[:256],
                            backend=long[:256], version=long[:256], swarm="s" * 32, hardware=hw)
    txt = mdns.worker_txt(profile)
    assert all(len(f"{k}={v}".encode()) <= mdns.TXT_MAX_BYTES for k, v in txt.items())
    assert sum(len(f"{k}={v}".encode()) + 1 for k, v in txt.items()) < ZEROCONF_MAX_PACKET // 2
    back = mdns.worker_from_txt(encoded(txt))
    assert back is not None and len(back.profile.hardware.gpus) == MAX_GPUS
    assert back.profile.node_id == "f" * 64 and back.profile.name.startswith("ÜÜÜ")
    for name in (mdns.worker_instance(profile), mdns.broker_instance("s" * 32, long, 65535)):
        label = name.split("._swarm-")[0]
        assert 0 < len(label.encode()) <= mdns.LABEL_MAX_BYTES
    assert len(mdns.server_name(mdns.worker_instance(profile)).split(".")[0]) <= 63


@pytest.mark.parametrize("props, why", [
    ({}, "empty"),
    ({b"name": b"w"}, "no id"),
    ({b"id": b"abc"}, "no name"),
    ({b"id": b"a b", b"name": b"w"}, "id with a space"),
    ({b"id": b"\xff\xfe", b"name": b"w"}, "id not utf-8"),
    ({b"id": b"abc", b"name": b"w", b"swarm": b"no such swarm!"}, "bad swarm name"),
    ({b"id": b"abc", b"name": b"   "}, "blank name"),
    ("not a map", "not a map"),
])
def test_a_record_without_usable_identity_is_skipped(props, why, caplog):
    caplog.set_level(logging.DEBUG, logger="common.mdns")
    assert mdns.worker_from_txt(props, who="stranger") is None, why
    assert "stranger" in caplog.text


def test_hostile_values_fall_back_to_defaults():
    props = {b"id": b"abc", b"name": b"w", b"slots": b"99999999999999999999", b"gl": b"-7",
             b"cores": b"-1/\xff", b"ram": b"1e9/2", b"plat": b"plan9", b"gpu0": b"a|b|c|d",
             b"gpu1": b"ok|100|50|not-cc", b"gpu99": b"x|1|1|1.0", b"gpu2": b"few|1",
             b"sv": b"yes", b"unknown": b"whatever", b"\xff": b"x", b"chip": b"\xc3",
             b"off": None, b"ver": "z" * 999}
    advert = mdns.worker_from_txt(props)
    p = advert.profile
    assert (p.slots, p.gpu_layers, p.seed_variation) == (1, 0, False)
    assert (p.hardware.cores_physical, p.hardware.cores_logical) == (0, 0)
    assert (p.hardware.ram_total_mb, p.hardware.ram_available_mb) == (0, 2)
    assert p.hardware.platform == "unknown" and p.hardware.chip == "unknown"
    assert p.hardware.gpus == (Gpu(1, "ok", 100, 50, ""),)
    assert len(p.version) <= 64 and p.swarm == "default"
    WorkerProfile.from_frame(p.to_frame(), "x")  # what we rebuilt passes the READY checks


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.one_of(st.binary(max_size=12), st.sampled_from(
    [b"id", b"name", b"gpu0", b"gpu15", b"cores", b"ram", b"gl", b"slots", b"swarm", b"plat"])),
    st.one_of(st.none(), st.binary(max_size=40), st.text(max_size=40).map(str.encode)),
    max_size=16))
def test_no_txt_ever_raises(props):
    advert = mdns.worker_from_txt({b"id": b"a", b"name": b"n", **props})
    if advert is not None:
        WorkerProfile.from_frame(advert.profile.to_frame(), "x")
        Hardware.from_map(advert.profile.hardware.to_map())
    mdns.broker_from_txt(props, 7555)


def test_broker_txt_round_trip_and_bad_ports():
    txt = encoded(mdns.broker_txt("lab", 7555, "0.1.0"))
    assert mdns.broker_from_txt(txt, 7555, ["192.168.1.2", "fe80::1%eth0", "junk"]) == \
        mdns.BrokerAdvert("lab", 7555, "0.1.0", ("192.168.1.2", "fe80::1"))
    assert mdns.broker_from_txt({b"swarm": b"lab", b"port": b"99999"}, 7000).port == 7000
    assert mdns.broker_from_txt({b"swarm": b"lab"}, None) is None
    assert mdns.broker_from_txt({b"port": b"7555"}, 7555) is None


def test_swarm_names_are_checked():
    assert mdns.check_swarm("lab-2_b") == "lab-2_b"
    for bad in ("", "-x", "a.b", "x" * 33, "ünï", "a b"):
        with pytest.raises(ConfigError):
            mdns.check_swarm(bad)
