"""A tiny MLX model made from scratch, so the MLX backend's real load and generate code runs.

No downloads: a real llama config (2 layers, hidden 64, 4 heads), random weights from
mlx-lm's own llama class saved as model.safetensors, and a byte-level BPE tokenizer trained
here on a few sentences with the `tokenizers` library, saved as tokenizer.json with a
tokenizer_config.json that transformers loads offline. Seeded: the same seed builds the
same model. The output head is untied and small, so its next-token distribution is close to
flat: at temperature 1.0 two seeds write different text.
"""

from __future__ import annotations

import json
from pathlib import Path

BOS, EOS = "<s>", "</s>"
SENTENCES = [
    "The capital of France is Paris.",
    "Name three colours: red, green and blue.",
    "Once upon a time a small worker answered the broker.",
    "User: hello there\nAssistant: hello, how can I help?",
    "Seeds make sampling repeatable; temperature makes it wander.",
] * 4
# a chat template in the usual Hugging Face shape, for the tokenizer-template path
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
CONTEXT = 256  # max_position_embeddings: small, so a too-long prompt is cheap to make


def _tokenizer(directory: Path, chat_template: str | None) -> int:
    """Train and save the tokenizer files; returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES, trainer)
    tok.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS,
              "add_bos_token": False}
    if chat_template is not None:
        config["chat_template"] = chat_template
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS}))
    return tok.get_vocab_size()


def _config(vocab_size: int) -> dict:
    return {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "vocab_size": vocab_size, "max_position_embeddings": CONTEXT, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1,
    }


def build_tiny_model(directory: Path, seed: int = 0, chat_template: str | None = None) -> Path:
    """Write a loadable MLX model directory at `directory` (made if missing); returns it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = _config(_tokenizer(directory, chat_template))
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(directory / "model.safetensors"), weights, metadata={"format": "mlx"})
    return directory
