"""Tiny random vision-language checkpoints, built offline in about a second.

:func:`build_tiny_vlm` writes a normal Hugging Face folder (config, safetensors weights, tokenizer,
chat template, image processor, and the processor/video-processor configs a server such as vLLM
reads), so every loading path runs exactly as it would for a real checkpoint. The weights are
random: what the model writes is junk, which is the point for tests that must keep every record.

Sizes follow what vLLM's CPU build serves (see DESIGN.md §5): the Qwen text model keeps
``head_dim`` at 64 and the multimodal RoPE sections add up to half of it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

TinyVLMFamily = Literal["qwen2_vl", "qwen2_5_vl", "smolvlm"]
FAMILIES: tuple[TinyVLMFamily, ...] = ("qwen2_vl", "qwen2_5_vl", "smolvlm")

# The Qwen2-VL / Qwen2.5-VL chat template, as shipped with Qwen/Qwen2-VL-*-Instruct.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# SmolVLM's chat template (HuggingFaceTB/SmolVLM-*-Instruct; the string-content branch is transformers'
# later fix so system messages given as plain strings render too).
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'] is string %}{{': ' + message['content']}}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}"
    "{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Qwen2's pre-tokenizer split: single digits, words with one leading non-letter, punctuation runs.
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
SMOLVLM_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    "<video>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
)

_QWEN_VOCAB = 3072
_SMOLVLM_VOCAB = 2048
# SmolVLM geometry: 64 px tiles of 16 px patches, pixel-shuffled by 2 -> 4 <image> tokens per tile;
# images are resized to at most 128 px, so at most 2x2 tiles plus the global view.
_SMOL_TILE, _SMOL_PATCH, _SMOL_SCALE, _SMOL_LONGEST = 64, 16, 2, 128
# Qwen2-VL image processor: what the real checkpoints use, but capped at 256 merged tokens per image.
_QWEN_MIN_PIXELS, _QWEN_MAX_PIXELS = 56 * 56, 256 * 28 * 28


def _corpus(seed: int = 1234) -> list[str]:
    """Deterministic training text: made-up words, the JSON a geolocation answer looks like, numbers."""
    rng = random.Random(seed)
    onsets = ["", "b", "br", "c", "ch", "d", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "qu", "r"]
    onsets += ["s", "sh", "st", "t", "th", "tr", "v", "w", "z"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "y"]
    codas = ["", "", "n", "r", "s", "l", "nd", "st", "t", "m", "ng"]

    def word() -> str:
        return "".join(
            rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.randint(1, 3))
        )

    keys = ["clues_used", "rationale", "continent", "country", "region", "city", "latitude", "longitude"]
    keys += ["radius_km", "confidence"]
    lines = []
    for _ in range(1500):
        sentence = " ".join(word() for _ in range(rng.randint(4, 14)))
        lines.append(sentence.capitalize() + rng.choice([".", ",", "!", "?", ":", ";"]))
        if rng.random() < 0.3:
            key = rng.choice(keys)
            lines.append(f'{{"{key}": "{word().title()}", "latitude": {rng.uniform(-90, 90):.4f}}}')
    return lines


def _train_tokenizer(special: tuple[str, ...], vocab_size: int) -> Any:
    """A byte-level BPE (Qwen2's pre-tokenizer) trained on :func:`_corpus`, special tokens last."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(special),
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    learned = tok.get_vocab_size()
    if learned != vocab_size - len(special):  # pragma: no cover - the corpus is sized to fill it
        raise RuntimeError(f"tiny tokenizer learned {learned} tokens, wanted {vocab_size - len(special)}")
    tok.add_special_tokens(list(special))
    return tok


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _save_tokenizer(
    folder: Path,
    tok: Any,
    *,
    special: tuple[str, ...],
    tokenizer_class: str,
    chat_template: str,
    bos: str | None,
    eos: str,
    pad: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """tokenizer.json plus a tokenizer_config.json that transformers 4.4x-5.x all read."""
    tok.save(str(folder / "tokenizer.json"))
    added = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in special
    }
    config: dict[str, Any] = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [t for t in special if t not in (bos, eos, pad)],
        "bos_token": bos,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": eos,
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": pad,
        "split_special_tokens": False,
        "tokenizer_class": tokenizer_class,
        "unk_token": None,
        **(extra or {}),
    }
    _write_json(folder / "tokenizer_config.json", config)
    _write_json(
        folder / "special_tokens_map.json",
        {
            "additional_special_tokens": config["additional_special_tokens"],
            "bos_token": bos,
            "eos_token": eos,
            "pad_token": pad,
        },
    )
    (folder / "chat_template.jinja").write_text(chat_template)


def _qwen_config(family: TinyVLMFamily, ids: dict[str, int]) -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    text = {
        "vocab_size": _QWEN_VOCAB,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [8, 12, 12]},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    common: dict[str, Any] = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": False,
    }
    config: Any
    if family == "qwen2_vl":
        vision: dict[str, Any] = {
            "depth": 2,
            "embed_dim": 128,
            "hidden_size": 256,
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        }
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **common)
    else:
        vision = {
            "depth": 2,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_heads": 2,
            "out_hidden_size": 256,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
        }
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    return config


def _build_qwen(folder: Path, family: TinyVLMFamily, seed: int) -> None:
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

    from geosleuth.retrieval.base import quiet_transformers

    tok = _train_tokenizer(QWEN_SPECIAL_TOKENS, _QWEN_VOCAB)
    ids = {t: tok.token_to_id(t) for t in QWEN_SPECIAL_TOKENS}
    config = _qwen_config(family, ids)
    model_cls = (
        Qwen2VLForConditionalGeneration if family == "qwen2_vl" else Qwen2_5_VLForConditionalGeneration
    )
    torch.manual_seed(seed)
    with quiet_transformers():
        model = model_cls(config).eval()
        model.generation_config.bos_token_id = ids["<|endoftext|>"]
        model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
        model.generation_config.pad_token_id = ids["<|endoftext|>"]
        model.save_pretrained(folder)
    _save_tokenizer(
        folder,
        tok,
        special=QWEN_SPECIAL_TOKENS,
        tokenizer_class="Qwen2Tokenizer",
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
    )
    vision = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "merge_size": 2,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "resample": 3,
        "rescale_factor": 1 / 255,
        # Both spellings: transformers 4.4x reads min/max_pixels, later versions read size.
        "min_pixels": _QWEN_MIN_PIXELS,
        "max_pixels": _QWEN_MAX_PIXELS,
        "size": {"shortest_edge": _QWEN_MIN_PIXELS, "longest_edge": _QWEN_MAX_PIXELS},
    }
    processor = "Qwen2_5_VLProcessor" if family == "qwen2_5_vl" else "Qwen2VLProcessor"
    _write_json(
        folder / "preprocessor_config.json",
        {**vision, "image_processor_type": "Qwen2VLImageProcessor", "processor_class": processor},
    )
    _write_json(
        folder / "video_preprocessor_config.json",
        {**vision, "video_processor_type": "Qwen2VLVideoProcessor", "processor_class": processor},
    )
    _write_json(folder / "processor_config.json", {"processor_class": processor})


def _build_smolvlm(folder: Path, seed: int) -> None:
    import torch
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    from geosleuth.retrieval.base import quiet_transformers

    tok = _train_tokenizer(SMOLVLM_SPECIAL_TOKENS, _SMOLVLM_VOCAB)
    ids = {t: tok.token_to_id(t) for t in SMOLVLM_SPECIAL_TOKENS}
    config = SmolVLMConfig(
        text_config={
            "model_type": "llama",
            "vocab_size": _SMOLVLM_VOCAB,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "bos_token_id": ids["<|im_start|>"],
            "eos_token_id": ids["<end_of_utterance>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": False,
        },
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": _SMOL_TILE,
            "patch_size": _SMOL_PATCH,
        },
        scale_factor=_SMOL_SCALE,
        image_token_id=ids["<image>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    with quiet_transformers():
        model = SmolVLMForConditionalGeneration(config).eval()
        model.generation_config.bos_token_id = ids["<|im_start|>"]
        model.generation_config.eos_token_id = [ids["<end_of_utterance>"], ids["<|endoftext|>"]]
        model.generation_config.pad_token_id = ids["<|endoftext|>"]
        model.save_pretrained(folder)
    _save_tokenizer(
        folder,
        tok,
        special=SMOLVLM_SPECIAL_TOKENS,
        tokenizer_class="GPT2Tokenizer",
        chat_template=SMOLVLM_CHAT_TEMPLATE,
        bos="<|im_start|>",
        eos="<end_of_utterance>",
        pad="<|endoftext|>",
        extra={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    )
    image_seq_len = (_SMOL_TILE // _SMOL_PATCH) ** 2 // _SMOL_SCALE**2
    vision = {
        "do_convert_rgb": True,
        "do_image_splitting": True,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "max_image_size": {"longest_edge": _SMOL_TILE},
        "resample": 1,
        "rescale_factor": 1 / 255,
        "size": {"longest_edge": _SMOL_LONGEST},
        "processor_class": "SmolVLMProcessor",
    }
    _write_json(
        folder / "preprocessor_config.json", {**vision, "image_processor_type": "SmolVLMImageProcessor"}
    )
    _write_json(
        folder / "video_preprocessor_config.json",
        {**vision, "do_image_splitting": False, "video_processor_type": "SmolVLMVideoProcessor"},
    )
    _write_json(
        folder / "processor_config.json",
        {"image_seq_len": image_seq_len, "processor_class": "SmolVLMProcessor"},
    )


def build_tiny_vlm(folder: str | Path, family: TinyVLMFamily = "qwen2_5_vl", *, seed: int = 0) -> Path:
    """Save a random tiny ``family`` checkpoint (a few MB) in ``folder`` and return the folder.

    Qwen2-VL / Qwen2.5-VL: 2 text layers (hidden 256, 4 heads / 2 KV heads, head_dim 64, vocab 3072,
    mrope sections [8, 12, 12]) and a 2-block vision tower (patch 14, merge 2), at most 256 image
    tokens per image. SmolVLM: a Llama text model (hidden 128) and a SigLIP tower on 64 px tiles,
    4 ``<image>`` tokens per tile, images split into at most 2x2 tiles plus a global view.
    The same ``seed`` gives the same weights; the tokenizer does not depend on it."""
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not one of {', '.join(FAMILIES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if family == "smolvlm":
        _build_smolvlm(folder, seed)
    else:
        _build_qwen(folder, family, seed)
    return folder


__all__ = ["FAMILIES", "TinyVLMFamily", "build_tiny_vlm"]
