"""What a model is, read from its header before loading it: layers, context, size.

A GGUF file's header is read by worker/gguf_header.py with the `gguf` package's constants
(loaded alone, see worker/gguf_constants.py)
and key names. Not by its `GGUFReader`: that builds a numpy view per array element, some 8 s
for the bundled model's 262k-token vocabulary on a 2-core machine, against 0.06 s for
skipping the arrays. An MLX model directory is read from its config.json and the size of
its *.safetensors.
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ModelError
from common.profile import MAX_CTX
from worker import gguf_constants
from worker.gguf_header import Array, BadHeader, Header, Truncated

gguf = gguf_constants.load()  # not `import gguf`: see worker/gguf_constants.py

KV_CACHE_BYTES = 2         # llama.cpp's default KV cache type is f16
N_UBATCH = 512             # llama.cpp's default micro-batch: its compute buffers scale with it
COMPUTE_FALLBACK_BYTES = 512 << 20  # compute buffers when the vocabulary size is unknown


@dataclass(frozen=True, slots=True)
class ModelInfo:
    path: str
    format: str                  # "gguf" (a file) or "mlx" (a directory)
    size_bytes: int              # the weights: the GGUF file, or the sum of *.safetensors
    n_layers: int                # repeating blocks; llama.cpp's "all" offloads n_layers + 1
    context_length: int          # the trained context, 0 when unknown
    architecture: str = "unknown"
    name: str = "unknown"
    embedding_length: int = 0
    head_count: int = 0
    head_count_kv: int = 0
    key_length: int = 0          # per head; 0: embedding_length // head_count
    value_length: int = 0
    layer_bytes: int = 0         # all blocks' tensors together; 0 when the header has none
    vocab_size: int = 0

    @property
    def offload_layers(self) -> int:
        """How llama.cpp counts "all": every block plus the output layer."""
        return self.n_layers + 1

    @property
    def per_layer_bytes(self) -> int:
        """One block's weights; without tensor sizes, the output layer counts as a block."""
        if self.layer_bytes and self.n_layers:
            return self.layer_bytes // self.n_layers
        return self.size_bytes // max(1, self.offload_layers)

    def compute_bytes(self, n_ctx: int) -> int:
        """llama.cpp's compute buffers, an estimate: a micro-batch of f32 logits over the
        vocabulary (514 MiB for the bundled model's 262k tokens), attention scores, activations."""
        if not self.vocab_size:
            return COMPUTE_FALLBACK_BYTES
        n_ctx = n_ctx if n_ctx > 0 else self.context_length
        scores = n_ctx * max(1, self.head_count)
        return 4 * N_UBATCH * (self.vocab_size + scores + 4 * self.embedding_length)

    def need_bytes(self, n_ctx: int) -> int:
        """One whole instance, on a GPU or in RAM: weights, KV cache and compute buffers."""
        return self.size_bytes + self.kv_bytes(n_ctx) + self.compute_bytes(n_ctx)

    def context_for(self, room_bytes: float) -> int:
        """The longest context (tokens) one whole instance fits in `room_bytes` with; 0: none.

        The need grows linearly with the context (cache and attention scores), so two
        points of it give its base and its cost per token."""
        base, slope = self.need_bytes(1024), (self.need_bytes(2048) - self.need_bytes(1024)) / 1024
        if slope <= 0:  # nothing known grows with the context
            return MAX_CTX if room_bytes >= base else 0
        return min(MAX_CTX, max(0, int((room_bytes - base) / slope) + 1024))

    def layer_need_bytes(self, n_ctx: int) -> int:
        """One offloaded layer: its weights and its share of the KV cache."""
        return self.per_layer_bytes + self.kv_bytes_per_layer(n_ctx)

    def kv_bytes(self, n_ctx: int) -> int:
        """The f16 KV cache for n_ctx tokens over every layer (an estimate: no sliding window)."""
        return self.n_layers * self.kv_bytes_per_layer(n_ctx)

    def kv_bytes_per_layer(self, n_ctx: int) -> int:
        n_ctx = n_ctx if n_ctx > 0 else self.context_length
        heads = self.head_count_kv or self.head_count
        head_dim = self.embedding_length // self.head_count if self.head_count else 0
        k = self.key_length or head_dim
        v = self.value_length or k
        if not heads or not k:  # no head layout: assume one K and one V row of the embedding
            return 2 * n_ctx * self.embedding_length * KV_CACHE_BYTES
        return n_ctx * heads * (k + v) * KV_CACHE_BYTES


def read_model_info(path: str | Path) -> ModelInfo:
    """A GGUF file's or an MLX model directory's info, by what the path is."""
    p = Path(path)
    return mlx_model_info(p) if p.is_dir() else read_gguf_info(p)


def read_gguf_info(path: str | Path) -> ModelInfo:
    """The model's shape from its GGUF header; ModelError when it is not a whole GGUF file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            if p.stat().st_size < 24:  # magic, version and the two counts
                raise BadHeader("is not a GGUF file: it is too short for a GGUF header")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                kv, tensors = Header(buf).read()
    except Truncated as e:
        raise ModelError(f"model file {p} is truncated: {e}") from e
    except BadHeader as e:
        raise ModelError(f"model file {p} {e}") from e
    except OSError as e:
        raise ModelError(f"model file {p} cannot be read: {e.strerror or e}") from e
    return _gguf_model_info(p, kv, tensors)


def _gguf_model_info(p: Path, kv: dict[str, Any], tensors: list[tuple[str, int]]) -> ModelInfo:
    arch = kv.get(gguf.Keys.General.ARCHITECTURE)
    if not isinstance(arch, str) or not arch:
        raise ModelError(f"model file {p} has no general.architecture in its GGUF header")

    def count(key: str) -> int:
        value = kv.get(key.format(arch=arch), 0)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    n_layers = count(gguf.Keys.LLM.BLOCK_COUNT)
    if not n_layers:
        raise ModelError(f"model file {p} has no {arch}.block_count in its GGUF header")
    name = kv.get(gguf.Keys.General.NAME)
    return ModelInfo(
        path=str(p), format="gguf", size_bytes=p.stat().st_size, n_layers=n_layers,
        context_length=count(gguf.Keys.LLM.CONTEXT_LENGTH), architecture=arch,
        name=name if isinstance(name, str) and name else p.stem,
        embedding_length=count(gguf.Keys.LLM.EMBEDDING_LENGTH),
        head_count=count(gguf.Keys.Attention.HEAD_COUNT),
        head_count_kv=count(gguf.Keys.Attention.HEAD_COUNT_KV),
        key_length=count(gguf.Keys.Attention.KEY_LENGTH),
        value_length=count(gguf.Keys.Attention.VALUE_LENGTH),
        layer_bytes=sum(size for tname, size in tensors if tname.startswith("blk.")),
        vocab_size=count(gguf.Keys.LLM.VOCAB_SIZE) or _length(kv.get(gguf.Keys.Tokenizer.LIST)),
    )


def _length(value: Any) -> int:
    return value.length if isinstance(value, Array) else 0


def mlx_model_info(path: str | Path) -> ModelInfo:
    """An MLX model directory's shape from its config.json; ModelError when it is not one."""
    p = Path(path)
    config = p / "config.json"
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ModelError(f"{p} is not an MLX model directory: it has no config.json") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{config} cannot be read as JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise ModelError(f"{config} is not a JSON object")
    text = cfg.get("text_config")
    if isinstance(text, dict):  # multimodal configs keep the language model's shape here
        cfg = {**cfg, **text}
    weights = sorted(p.glob("*.safetensors"))
    if not weights:
        raise ModelError(f"{p} is not an MLX model directory: it has no *.safetensors weights")

    def count(*keys: str) -> int:
        for key in keys:
            value = cfg.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return 0

    n_layers = count("num_hidden_layers", "n_layers", "num_layers")
    if not n_layers:
        raise ModelError(f"{config} has no num_hidden_layers")
    arch = cfg.get("model_type")
    head_dim = count("head_dim")
    return ModelInfo(
        path=str(p), format="mlx", size_bytes=sum(w.stat().st_size for w in weights),
        n_layers=n_layers, context_length=count("max_position_embeddings"),
        architecture=arch if isinstance(arch, str) and arch else "unknown", name=p.name,
        embedding_length=count("hidden_size"), head_count=count("num_attention_heads"),
        head_count_kv=count("num_key_value_heads"), key_length=head_dim, value_length=head_dim,
        vocab_size=count("vocab_size"),
    )
