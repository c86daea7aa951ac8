"""A model's shape read from its header before loading: GGUF files and MLX directories."""

from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest

from common.errors import ModelError
from worker.gguf_info import mlx_model_info, read_gguf_info, read_model_info


def write_gguf(path, endian=gguf.GGUFEndian.LITTLE, vocab=300, blocks=2):
    """A small GGUF file like a converter writes: metadata, a vocabulary, f32/f16 tensors."""
    w = gguf.GGUFWriter(str(path), "llama", endianess=endian)
    w.add_name("Tiny Test")
    w.add_block_count(blocks)
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_head_count(8)
    w.add_head_count_kv(2)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i}" for i in range(vocab)])
    w.add_token_scores([0.5] * vocab)
    w.add_uint32("test.nested_is_skipped", 7)
    w.add_tensor("token_embd.weight", np.ones((vocab, 64), dtype=np.float32))
    for b in range(blocks):
        w.add_tensor(f"blk.{b}.attn_q.weight", np.ones((64, 64), dtype=np.float16))
        w.add_tensor(f"blk.{b}.ffn_up.weight", np.ones((128, 64), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.timeout(60)
def test_the_bundled_model_header(model_path):
    # Given the bundled Gemma 3 270M; When its header is read
    info = read_gguf_info(model_path)
    # Then its real shape comes back, without loading it
    assert (info.architecture, info.n_layers, info.context_length) == ("gemma3", 18, 32768)
    assert (info.embedding_length, info.head_count, info.head_count_kv) == (640, 4, 1)
    assert (info.key_length, info.value_length, info.vocab_size) == (256, 256, 262144)
    assert info.name == "Gemma 3 270m" and info.format == "gguf"
    assert info.size_bytes == model_path.stat().st_size
    assert info.offload_layers == 19
    # 18 blocks of 3.6 MiB; the rest is mostly the 262k-token embedding
    assert info.layer_bytes == 68327424
    # llama.cpp reports a 36 MiB f16 cache at n_ctx 2048 and a 514.5 MiB compute buffer:
    # the estimates are at or above what it allocates, and not wildly so
    assert 36 << 20 <= info.kv_bytes(2048) <= 40 << 20
    assert 514 << 20 <= info.compute_bytes(2048) <= 600 << 20


@pytest.mark.parametrize("endian", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_a_written_header_reads_as_ggufreader_reads_it(tmp_path, endian):
    # Given a GGUF file written by the gguf package, in either byte order
    path = write_gguf(tmp_path / "tiny.gguf", endian)
    # When it is read here and by the package's own (slow) reader
    info = read_gguf_info(path)
    reader = gguf.GGUFReader(path)
    # Then both agree on the tensors' sizes, and the metadata comes through
    blocks = sum(int(t.n_bytes) for t in reader.tensors if t.name.startswith("blk."))
    assert info.layer_bytes == blocks == 2 * (64 * 64 * 2 + 128 * 64 * 4)
    assert (info.architecture, info.name, info.n_layers, info.context_length) == \
        ("llama", "Tiny Test", 2, 4096)
    assert (info.head_count, info.head_count_kv, info.vocab_size) == (8, 2, 300)
    # and the KV estimate uses the head layout: 2 kv heads of 64 / 8 = 8, K and V, f16
    assert info.kv_bytes(1000) == 2 * 1000 * 2 * (8 + 8) * 2


def test_every_truncation_of_a_header_is_one_clear_error(tmp_path):
    # Given a small GGUF file
    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    header_end = whole.index(b"output_norm.weight") + 40
    cut = tmp_path / "cut.gguf"
    # When any prefix of its header is read: Then a ModelError, never another exception
    for n in range(0, header_end, 7):
        cut.write_bytes(whole[:n])
        with pytest.raises(ModelError, match="truncated|not a GGUF file"):
            read_gguf_info(cut)


@pytest.mark.timeout(60)
def test_a_truncated_copy_of_the_bundled_model(model_path, tmp_path):
    # Given the first megabyte of the bundled model (its header runs to about 4 MB)
    cut = tmp_path / "cut.gguf"
    with model_path.open("rb") as f:
        cut.write_bytes(f.read(1 << 20))
    # When it is read; Then one sentence naming the file
    with pytest.raises(ModelError, match=r"cut\.gguf is truncated: its GGUF header ends early"):
        read_gguf_info(cut)


@pytest.mark.parametrize("content, message", [
    (b"", "too short"),
    (b"not a model at all, just some junk text " * 10, "does not start with the GGUF magic"),
    (b"GGUF" + (1).to_bytes(4, "little") + bytes(40), "GGUF version 1"),
    (b"GGUF" + (3).to_bytes(4, "little") + bytes(8) + (10**9).to_bytes(8, "little"),
     "corrupt GGUF header"),
])
def test_junk_is_not_a_gguf_file(tmp_path, content, message):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        read_gguf_info(junk)


def test_a_missing_file_and_a_header_without_layers(tmp_path):
    with pytest.raises(ModelError, match="cannot be read"):
        read_gguf_info(tmp_path / "absent.gguf")
    w = gguf.GGUFWriter(str(tmp_path / "bare.gguf"), "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    with pytest.raises(ModelError, match="no llama.block_count"):
        read_gguf_info(tmp_path / "bare.gguf")


def mlx_dir(tmp_path, config, weights=(1000, 2345)):
    d = tmp_path / "mlx-model"
    d.mkdir()
    if config is not None:
        (d / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    for i, size in enumerate(weights):
        (d / f"model-{i}.safetensors").write_bytes(bytes(size))
    return d


def test_an_mlx_directory(tmp_path):
    # Given an MLX model directory: a config.json and two safetensors shards
    d = mlx_dir(tmp_path, {"model_type": "qwen2", "num_hidden_layers": 24,
                           "max_position_embeddings": 32768, "hidden_size": 896,
                           "num_attention_heads": 14, "num_key_value_heads": 2,
                           "vocab_size": 151936})
    # When it is read (directly, or by what the path is)
    info = mlx_model_info(d)
    # Then its shape, and the weights' size as the sum of the shards
    assert info == read_model_info(d)
    assert (info.format, info.architecture, info.name) == ("mlx", "qwen2", "mlx-model")
    assert (info.n_layers, info.context_length, info.size_bytes) == (24, 32768, 3345)
    assert (info.head_count, info.head_count_kv, info.vocab_size) == (14, 2, 151936)


def test_an_mlx_multimodal_config_keeps_its_text_model_shape(tmp_path):
    d = mlx_dir(tmp_path, {"model_type": "gemma3", "text_config": {
        "num_hidden_layers": 26, "hidden_size": 1152, "head_dim": 256}})
    info = mlx_model_info(d)
    assert (info.n_layers, info.key_length, info.context_length) == (26, 256, 0)


@pytest.mark.parametrize("config, weights, message", [
    (None, (10,), "has no config.json"),
    ("{not json", (10,), "cannot be read as JSON"),
    ("[1, 2]", (10,), "is not a JSON object"),
    ({"num_hidden_layers": 4}, (), r"has no \*\.safetensors"),
    ({"num_hidden_layers": "four"}, (10,), "has no num_hidden_layers"),
])
def test_not_an_mlx_directory(tmp_path, config, weights, message):
    d = mlx_dir(tmp_path, config, weights)
    with pytest.raises(ModelError, match=message):
        mlx_model_info(d)


def test_read_model_info_takes_a_file_as_gguf(tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf")
    assert read_model_info(path).format == "gguf"
    shutil.copy(path, tmp_path / "copy.bin")
    assert read_model_info(tmp_path / "copy.bin").n_layers == 2


def test_a_file_cut_inside_its_tensor_data(tmp_path):
    # Given a GGUF file whose header is whole but whose last tensor lost its last bytes
    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:-200])
    # When it is read; Then it is truncated, before llama.cpp would find out at load
    with pytest.raises(ModelError, match=r"is truncated: it holds \d+ of the \d+ bytes"):
        read_gguf_info(cut)
    # and the whole file reads
    assert read_gguf_info(tmp_path / "whole.gguf").n_layers == 2


def test_arrays_nested_too_deep_are_refused(tmp_path):
    path = tmp_path / "nested.gguf"
    body = b"".join([
        b"GGUF", (3).to_bytes(4, "little"), (0).to_bytes(8, "little"), (1).to_bytes(8, "little"),
        (1).to_bytes(8, "little"), b"k", (9).to_bytes(4, "little"),
        *[(9).to_bytes(4, "little") + (1).to_bytes(8, "little") for _ in range(10)],
        bytes(64)])
    path.write_bytes(body)
    with pytest.raises(ModelError, match="nested too deep"):
        read_gguf_info(path)
