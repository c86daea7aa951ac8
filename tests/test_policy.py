"""The worker's policy over a table of machines: backend, context, GPU layers, split,
instances, threads and seed variation, each with the reason a user reads in --print-profile."""

from __future__ import annotations

import dataclasses
import json

import pytest

from common.errors import ConfigError
from common.hardware import Gpu, Hardware
from worker.gguf_info import ModelInfo
from worker.policy import (AUTO, MIN_AUTO_CTX, Requested, choose_backend, choose_gpu_layers,
                           choose_instances, choose_n_ctx, choose_tensor_split, choose_threads,
                           parse_auto_int, plan)

GiB = 1 << 30

# The bundled Gemma 3 270M as its header reads (tests/test_gguf_info.py checks the real one)
GEMMA = ModelInfo(path="gemma.gguf", format="gguf", size_bytes=253113024, n_layers=18,
                  context_length=32768, architecture="gemma3", name="Gemma 3 270m",
                  embedding_length=640, head_count=4, head_count_kv=1, key_length=256,
                  value_length=256, layer_bytes=68327424, vocab_size=262144)
# A 13 GB 40-layer model (a 13B llama at 8 bits), no tensor sizes known
BIG = ModelInfo(path="big.gguf", format="gguf", size_bytes=13 * GiB, n_layers=40,
                context_length=4096, embedding_length=5120, head_count=40, head_count_kv=40,
                vocab_size=32000)
MLX = ModelInfo(path="/models/qwen-mlx", format="mlx", size_bytes=GiB, n_layers=24,
                context_length=32768, embedding_length=896, head_count=14, head_count_kv=2,
                vocab_size=151936)


def linux(cores=16, ram_gb=64, gpus=(), offload=True, **kw) -> Hardware:
    return Hardware(os="Linux", arch="x86_64", platform="linux", cores_physical=cores,
                    cores_logical=cores * 2, ram_total_mb=ram_gb * 1024,
                    ram_available_mb=ram_gb * 1024 * 3 // 4, gpus=tuple(gpus),
                    gpu_offload=offload, **kw)


CUDA2 = linux(gpus=[Gpu(0, "NVIDIA GeForce RTX 4090", 24564, 22000, "8.9"),
                    Gpu(1, "NVIDIA GeForce RTX 3060", 12288, 11000, "8.6")])
SMALL_GPU = linux(cores=8, gpus=[Gpu(0, "NVIDIA GeForce RTX 3070", 8192, 7800, "8.6")])
OLD_GPU = linux(gpus=[Gpu(0, "Tesla K80", 12288, 12000, "3.7")])
NO_OFFLOAD = linux(gpus=[Gpu(0, "NVIDIA GeForce RTX 4090", 24564, 22000, "8.9")], offload=False)
MAC_M2 = Hardware(os="Darwin", arch="arm64", platform="macos", apple_silicon=True,
                  chip="Apple M2", cores_physical=8, cores_logical=8, ram_total_mb=16384,
                  ram_available_mb=10000, unified_memory=True, gpu_offload=True)
PHONE = Hardware(os="Linux", arch="aarch64", platform="android", termux=True,
                 chip="Qualcomm Snapdragon 8 Gen 2", cores_physical=8, cores_logical=8,
                 ram_total_mb=12288, ram_available_mb=6000, gpu_offload=False)
CPU2 = linux(cores=2, ram_gb=4, offload=False)
CPU32 = linux(cores=32, ram_gb=128, offload=False)

# machine, model, backend, context, gpu layers, instances, threads, seed variation, reason words
TABLE = {
    "cuda box, two unequal GPUs": (CUDA2, GEMMA, "llama.cpp", 32768, -1, 4, 4, True, "all 19 layers"),
    "8 GB GPU, 13 GB model": (SMALL_GPU, BIG, "llama.cpp", 4096, 15, 1, 8, True, "15 of 41 layers"),
    "8 GB GPU, small model": (SMALL_GPU, GEMMA, "llama.cpp", 32768, -1, 2, 4, True, "all 19"),
    "old GPU, cc 3.7": (OLD_GPU, GEMMA, "llama.cpp", 32768, 0, 4, 4, True, "Tesla K80 3.7"),
    "GPU, build without offload": (NO_OFFLOAD, GEMMA, "llama.cpp", 32768, 0, 4, 4, True,
                                   "cannot offload"),
    "Mac M2, GGUF": (MAC_M2, GEMMA, "llama.cpp", 32768, -1, 2, 4, True, "Metal"),
    "Mac M2, MLX": (MAC_M2, MLX, "mlx", 32768, -1, 2, 4, True, "mlx"),
    "Termux phone": (PHONE, GEMMA, "llama.cpp", 32768, 0, 1, 8, True, "Android"),
    "CPU only, 2 cores": (CPU2, GEMMA, "llama.cpp", 4096, 0, 1, 2, True, "no GPU"),
    "CPU only, 32 cores": (CPU32, GEMMA, "llama.cpp", 32768, 0, 8, 4, True, "no GPU"),
    "CPU only, CUDA build": (linux(cores=4), GEMMA, "llama.cpp", 32768, 0, 1, 4, True, "no GPU"),
    "Mac, llama.cpp without Metal": (Hardware(**{**MAC_M2.to_map(), "gpus": (),
                                               "gpu_offload": False}),
                                     GEMMA, "llama.cpp", 32768, 0, 2, 4, True, "cannot offload"),
}


@pytest.mark.parametrize("case", TABLE, ids=list(TABLE))
def test_the_table(case):
    hw, model, backend, n_ctx, layers, instances, threads, seeds, words = TABLE[case]
    # Given a machine and a model; When everything is left to the policy
    p = plan(hw, model, Requested(), mlx_available=model.format == "mlx")
    # Then each decision is the expected one
    assert p.backend.value == backend
    assert p.n_ctx.value == n_ctx
    assert p.gpu_layers.value == layers
    assert words in p.gpu_layers.reason
    assert p.instances.value == instances
    assert p.threads.value == threads
    assert p.seed_variation.value is seeds
    # and every reason is one short sentence a user reads
    for name, m in p.to_map().items():
        assert m["reason"] and "\n" not in m["reason"] and len(m["reason"]) <= 120, (name, m)


def test_two_unequal_gpus_split_by_free_vram():
    p = plan(CUDA2, GEMMA, Requested())
    assert p.tensor_split.value == pytest.approx((2 / 3, 1 / 3))
    assert sum(p.tensor_split.value) == pytest.approx(1.0)
    assert "GPU 0 67%, GPU 1 33%" in p.tensor_split.reason


@pytest.mark.parametrize("hw", [SMALL_GPU, OLD_GPU, CPU32, MAC_M2])
def test_no_split_for_one_gpu_or_none(hw):
    assert plan(hw, GEMMA, Requested()).tensor_split.value is None


def test_an_old_gpu_beside_a_new_one_gets_no_share_of_the_layers():
    hw = linux(gpus=[Gpu(0, "Tesla K80", 12288, 12000, "3.7"),
                     Gpu(1, "NVIDIA GeForce RTX 3060", 12288, 11000, "8.6")])
    p = plan(hw, GEMMA, Requested())
    assert p.gpu_layers.value == -1 and "10.7 GB of free VRAM" in p.gpu_layers.reason
    assert p.tensor_split.value == (0.0, 1.0)


def test_a_model_fits_only_with_its_cache_and_buffers_counted():
    # Given a GPU whose room after the 1 GB headroom holds the weights, not the KV cache
    model = BIG
    weights_mb = model.size_bytes >> 20
    hw = linux(gpus=[Gpu(0, "NVIDIA A10", 24576, weights_mb + 1024 + 100, "8.6")])
    # When the layers are chosen at a long context; Then not all of them
    layers = choose_gpu_layers(hw, model, AUTO, 4096, "llama.cpp")
    assert 0 < layers.value < model.n_layers
    # and at a short one with a bigger GPU, all
    hw = linux(gpus=[Gpu(0, "NVIDIA A100", 40960, 40000, "8.0")])
    assert choose_gpu_layers(hw, model, AUTO, 512, "llama.cpp").value == -1


def test_a_gpu_too_small_for_one_layer_gets_none():
    hw = linux(gpus=[Gpu(0, "NVIDIA GeForce GT 1030", 2048, 1400, "6.1")])
    d = choose_gpu_layers(hw, BIG, AUTO, 2048, "llama.cpp")
    assert d.value == 0 and d.reason.startswith("none:")


def test_explicit_values_are_taken_as_given():
    req = Requested(backend="llama.cpp", gpu_layers=10, instances=3, threads=5,
                    seed_variation=False)
    p = plan(CPU2, GEMMA, req)
    assert (p.backend.value, p.gpu_layers.value, p.instances.value, p.threads.value,
            p.seed_variation.value) == ("llama.cpp", 10, 3, 5, False)
    assert p.gpu_layers.reason == "set by --gpu-layers"
    assert p.seed_variation.reason == "set by --no-seed-variation"
    assert plan(CUDA2, GEMMA, Requested(gpu_layers=-1)).gpu_layers.value == -1


def test_threads_follow_instances_when_only_instances_are_given():
    p = plan(CPU32, GEMMA, Requested(instances=2))
    assert (p.instances.value, p.threads.value, p.seed_variation.value) == (2, 16, True)
    assert "2 instances first" in p.seed_variation.reason


def test_backend_choices_and_refusals():
    # auto on a Mac says why it is llama.cpp for a GGUF file
    assert "mlx-lm is not installed" in choose_backend(MAC_M2, GEMMA, AUTO, False).reason
    assert "GGUF file" in choose_backend(MAC_M2, GEMMA, AUTO, True).reason
    assert "not Apple Silicon" in choose_backend(CPU2, GEMMA, AUTO, True).reason
    # an MLX directory runs on mlx's CPU build off Apple Silicon
    d = choose_backend(CPU2, MLX, AUTO, True)
    assert d.value == "mlx" and "CPU" in d.reason
    with pytest.raises(ConfigError, match="--backend mlx needs mlx-lm"):
        choose_backend(MAC_M2, MLX, "mlx", False)
    with pytest.raises(ConfigError, match="MLX model directory, but mlx-lm does not import"):
        choose_backend(MAC_M2, MLX, AUTO, False)
    with pytest.raises(ConfigError, match="needs an MLX model directory"):
        choose_backend(MAC_M2, GEMMA, "mlx", True)
    with pytest.raises(ConfigError, match="needs a GGUF file"):
        choose_backend(MAC_M2, MLX, "llama.cpp", True)


def test_mlx_off_apple_silicon_stays_on_the_cpu():
    p = plan(CPU32, MLX, Requested(), mlx_available=True)
    assert (p.backend.value, p.gpu_layers.value, p.tensor_split.value) == ("mlx", 0, None)


def test_unknown_ram_still_gives_one_instance():
    hw = Hardware(platform="linux", cores_physical=16)
    d = choose_instances(hw, GEMMA, AUTO, 2048, 0, "llama.cpp")
    assert d.value == 1 and "RAM unknown" in d.reason


def test_a_model_too_big_for_ram_gives_one_instance_with_a_warning():
    d = choose_instances(CPU2, BIG, AUTO, 2048, 0, "llama.cpp")
    assert d.value == 1 and "may not fit" in d.reason


def test_unknown_cores():
    hw = Hardware(platform="linux", ram_available_mb=64000)
    assert choose_threads(hw, AUTO, 1).value == 1
    assert choose_instances(hw, GEMMA, AUTO, 2048, 0, "llama.cpp").value == 1
    logical_only = Hardware(platform="linux", cores_logical=4)
    d = choose_threads(logical_only, AUTO, 1)
    assert d.value == 4 and "logical" in d.reason


def test_two_cores_one_instance_gets_both_cores():
    # llama-cpp-python's own default (half the cores) runs 19 tok/s here against 29 with two
    assert choose_threads(CPU2, AUTO, 1).value == 2


def test_tensor_split_without_free_vram_reported():
    hw = linux(gpus=[Gpu(0, vram_free_mb=0), Gpu(1, vram_free_mb=0)])
    assert choose_tensor_split(hw, 10, "llama.cpp").value is None


def test_the_plan_as_json_and_as_lines():
    p = plan(CUDA2, GEMMA, Requested())
    m = json.loads(json.dumps(p.to_map()))
    assert set(m) == {"backend", "n_ctx", "gpu_layers", "tensor_split", "instances", "threads",
                      "seed_variation"}
    assert m["tensor_split"]["value"] == pytest.approx([2 / 3, 1 / 3])
    lines = p.lines()
    assert lines[1].startswith("n_ctx: 32768 (the model's trained context: 1 x 1.6 GB fits")
    assert lines[2].startswith("gpu_layers: -1 (all 19 layers: the 0.2 GB model")
    assert "tensor_split: [0.67, 0.33]" in lines[3]
    assert lines[6].startswith("seed_variation: on (a job's candidates go to the 4 instances")


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "vulkan"}, "--backend must be one of auto, llama.cpp, mlx"),
    ({"gpu_layers": -2}, "--gpu-layers must be auto or a whole number at least -1"),
    ({"instances": 0}, "--instances must be auto or a whole number from 1 to 64"),
    ({"instances": 65}, "from 1 to 64"),
    ({"threads": 0}, "--threads must be"),
    ({"threads": True}, "--threads must be"),
    ({"gpu_layers": "all"}, "--gpu-layers must be"),
    ({"n_ctx": -5}, "--n-ctx must be"),
    ({"n_ctx": 1 << 30}, "--n-ctx must be auto or a whole number from 0 to 16777216"),
    ({"n_ctx": "long"}, "--n-ctx must be"),
])
def test_bad_requests_are_one_sentence(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Requested(**kwargs)


def test_parse_auto_int():
    assert parse_auto_int("auto", "--gpu-layers", -1) == AUTO
    assert parse_auto_int(" AUTO ", "--gpu-layers", -1) == AUTO
    assert parse_auto_int("-1", "--gpu-layers", -1) == -1
    assert parse_auto_int("12", "--instances", 1, 64) == 12
    with pytest.raises(ConfigError, match="--instances must be auto or a whole number, not 'x'"):
        parse_auto_int("x", "--instances", 1, 64)
    with pytest.raises(ConfigError, match="from 1 to 64"):
        parse_auto_int("100", "--instances", 1, 64)


def test_a_gpu_of_unknown_compute_capability_is_used():
    hw = linux(gpus=[Gpu(0, "NVIDIA mystery", 16384, 16000, "")])
    assert choose_gpu_layers(hw, GEMMA, AUTO, 2048, "llama.cpp").value == -1


# -- the context window ------------------------------------------------------------------------
def with_ram(available_mb: int, cores: int = 4) -> Hardware:
    return Hardware(os="Linux", platform="linux", cores_physical=cores, cores_logical=cores,
                    ram_total_mb=available_mb * 2, ram_available_mb=available_mb)


def test_auto_context_is_the_trained_one_where_it_fits():
    d = choose_n_ctx(CPU32, GEMMA, AUTO, AUTO, AUTO, "llama.cpp")
    assert d.value == 32768
    assert d.reason == ("the model's trained context: 1 x 1.6 GB fits in half the 76.8 GB of "
                        "free RAM after headroom")


def test_auto_context_is_capped_by_what_fits_in_half_the_room():
    # Given 4.5 GB available: 2.5 GB after the 2 GB headroom, half of it for the context
    hw = with_ram(4500)
    d = choose_n_ctx(hw, GEMMA, AUTO, AUTO, AUTO, "llama.cpp")
    # Then the longest context in whole thousands (1024) whose instance fits there, no longer
    half = (4500 - 2048) / 2 * (1 << 20)
    assert MIN_AUTO_CTX < d.value < GEMMA.context_length and d.value % 1024 == 0
    assert GEMMA.need_bytes(d.value) <= half < GEMMA.need_bytes(d.value + 1024)
    assert d.reason.startswith(f"{d.value} of the model's 32768 tokens: 1 x ")


def test_instances_asked_for_share_the_room_for_contexts():
    # Given 7 GB available: one instance takes the trained context
    hw = with_ram(7000)
    assert choose_n_ctx(hw, GEMMA, AUTO, AUTO, AUTO, "llama.cpp").value == 32768
    # When --instances 2 is asked for; Then both contexts fit in the same half of the room
    d = choose_n_ctx(hw, GEMMA, AUTO, 2, AUTO, "llama.cpp")
    half = (7000 - 2048) / 2 * (1 << 20)
    assert MIN_AUTO_CTX < d.value < 32768 and 2 * GEMMA.need_bytes(d.value) <= half
    assert "2 x " in d.reason


def test_auto_context_never_goes_below_the_floor_and_says_it_may_not_fit():
    d = choose_n_ctx(with_ram(2500), GEMMA, AUTO, AUTO, AUTO, "llama.cpp")
    assert d.value == MIN_AUTO_CTX and "may not fit" in d.reason
    # a model trained on less than the floor keeps its own
    short = dataclasses.replace(BIG, context_length=2048)
    assert choose_n_ctx(with_ram(2500), short, AUTO, AUTO, AUTO, "llama.cpp").value == 2048


def test_auto_context_counts_vram_where_layers_go_to_the_gpu():
    # Given a GPU with 3 GB free beside 64 GB of RAM: the cache lives on the GPU
    hw = linux(gpus=[Gpu(0, "NVIDIA T400", 4096, 3072, "7.5")])
    d = choose_n_ctx(hw, GEMMA, AUTO, AUTO, AUTO, "llama.cpp")
    assert d.value < 32768 and "of free VRAM" in d.reason
    # and with no layers offloaded, RAM counts instead
    ram = choose_n_ctx(hw, GEMMA, AUTO, AUTO, 0, "llama.cpp")
    assert ram.value == 32768 and "of free RAM" in ram.reason


def test_auto_context_where_memory_or_the_trained_context_is_unknown():
    d = choose_n_ctx(Hardware(platform="linux"), GEMMA, AUTO, AUTO, AUTO, "llama.cpp")
    assert d.value == 4096 and "available RAM unknown" in d.reason
    unknown = ModelInfo(path="m.gguf", format="gguf", size_bytes=GiB, n_layers=8,
                        context_length=0)
    d = choose_n_ctx(CPU32, unknown, AUTO, AUTO, AUTO, "llama.cpp")
    assert d.value == 4096 and "does not say" in d.reason


def test_a_given_context_is_taken_and_0_is_the_trained_one():
    d = choose_n_ctx(CPU2, GEMMA, 512, AUTO, AUTO, "llama.cpp")
    assert (d.value, d.reason) == (512, "set by --n-ctx")
    d = choose_n_ctx(CPU2, GEMMA, 0, AUTO, AUTO, "llama.cpp")
    assert (d.value, d.reason) == (32768, "the model's trained context, set by --n-ctx 0")


def test_the_chosen_context_sizes_the_gpu_layers_and_instances():
    # Given a 13 GB model on an 8 GB GPU: a forced long context leaves room for fewer layers
    short = plan(SMALL_GPU, BIG, Requested(n_ctx=1024))
    long = plan(SMALL_GPU, BIG, Requested())
    assert long.n_ctx.value == 4096 and short.gpu_layers.value > long.gpu_layers.value
