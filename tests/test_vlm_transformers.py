"""The in-process transformers backend on tiny random checkpoints built offline (no torchvision, no hub).

Random weights write junk: the point is that every request still gets a call, every sample keeps its
raw text, and an unusable one says why."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")

from geosleuth.agents.vlm.base import VLMBackend, VLMRequest
from geosleuth.agents.vlm.transformers_backend import TransformersVLM, resize_longest
from geosleuth.errors import ConfigError, WeightsNotFoundError
from geosleuth.testing import build_tiny_vlm

FAMILIES = ["qwen2_5_vl", "smolvlm"]


def photo(w: int = 160, h: int = 120, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8"))


def request(images: list[Image.Image], **kw: object) -> VLMRequest:
    fields: dict[str, object] = {
        "key": "a.jpg#zero-shot",
        "variant": "zero-shot",
        "system": "You geolocate photos.",
        "text": "Where was this taken? Answer in JSON.",
        "images": images,
        "n": 2,
        "max_tokens": 24,
        "seed": 0,
        "prompt_hash": "abc",
    }
    fields.update(kw)
    return VLMRequest.model_validate(fields)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-vlm")
    return {fam: build_tiny_vlm(root / fam, fam) for fam in FAMILIES}


@pytest.fixture(scope="module")
def backends(checkpoints: dict[str, Path]) -> Iterator[dict[str, TransformersVLM]]:
    loaded = {fam: TransformersVLM(str(path)) for fam, path in checkpoints.items()}
    yield loaded
    for vlm in loaded.values():
        vlm.close()


def test_tiny_checkpoint_is_a_complete_folder(checkpoints: dict[str, Path]) -> None:
    qwen = checkpoints["qwen2_5_vl"]
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "preprocessor_config.json",
        "video_preprocessor_config.json",
        "processor_config.json",
        "generation_config.json",
    ):
        assert (qwen / name).is_file(), name
    config = json.loads((qwen / "config.json").read_text())
    vocab = json.loads((qwen / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    assert config["image_token_id"] == added["<|image_pad|>"]
    assert config["vision_start_token_id"] == added["<|vision_start|>"]
    text = config["text_config"]
    assert text["hidden_size"] // text["num_attention_heads"] == 64
    assert sum(text["rope_parameters"]["mrope_section"]) == 32
    smol = json.loads((checkpoints["smolvlm"] / "tokenizer.json").read_text())
    assert {
        "<image>",
        "<fake_token_around_image>",
        "<global-img>",
        "<row_2_col_2>",
        "<end_of_utterance>",
    } <= {t["content"] for t in smol["added_tokens"]}


def test_tiny_vlm_rejects_unknown_family(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="llava"):
        build_tiny_vlm(tmp_path, "llava")  # type: ignore[arg-type]


@pytest.mark.parametrize("family", FAMILIES)
def test_one_image_two_samples_keep_every_record(backends: dict[str, TransformersVLM], family: str) -> None:
    vlm = backends[family]
    assert isinstance(vlm, VLMBackend)
    [call] = vlm.generate([request([photo()])])
    assert call.error is None
    assert (call.backend, call.model, call.structured) == ("transformers", vlm.model, "none")
    assert (call.key, call.variant, call.prompt_hash, call.n) == ("a.jpg#zero-shot", "zero-shot", "abc", 2)
    assert [s.index for s in call.samples] == [0, 1]
    assert call.usage.prompt_tokens > 0 and call.usage.completion_tokens > 0
    assert call.latency_s > 0
    for s in call.samples:
        assert isinstance(s.raw_text, str)
        assert s.finish_reason in ("stop", "length")
        if s.guess is None:
            assert s.error and s.error_type  # junk is kept, and says why
        else:
            assert (s.guess.latitude, s.guess.longitude) != (0.0, 0.0) or s.notes


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_tokens_count_the_image_tokens(backends: dict[str, TransformersVLM], family: str) -> None:
    vlm = backends[family]
    greedy = {"n": 1, "temperature": 0.0, "max_tokens": 16}
    none, one, two = vlm.generate(
        [request([], **greedy), request([photo()], **greedy), request([photo(), photo(seed=1)], **greedy)]
    )
    image_tokens = one.usage.prompt_tokens - none.usage.prompt_tokens
    assert image_tokens > 4
    # SmolVLM's layout puts plain-text newlines around tiles, which BPE may merge across images.
    assert abs(two.usage.prompt_tokens - one.usage.prompt_tokens - image_tokens) <= (family == "smolvlm")
    ids = vlm.prepare(request([photo()]))["input_ids"]
    assert int((ids == vlm.image_token_id).sum()) > 0


def test_qwen_image_tokens_follow_the_grid(backends: dict[str, TransformersVLM]) -> None:
    vlm = backends["qwen2_5_vl"]
    inputs = vlm.prepare(request([photo(280, 140), photo(56, 56)]))
    grid = inputs["image_grid_thw"]
    assert grid.tolist() == [[1, 10, 20], [1, 4, 4]]
    assert int((inputs["input_ids"] == vlm.image_token_id).sum()) == (200 + 16) // 4
    assert (inputs["mm_token_type_ids"] == (inputs["input_ids"] == vlm.image_token_id)).all()


def test_smolvlm_layout_matches_the_idefics3_processor(backends: dict[str, TransformersVLM]) -> None:
    """Idefics3Processor needs no torchvision: it is the reference for SmolVLM's token layout."""
    from transformers import Idefics3Processor

    vlm = backends["smolvlm"]
    r = request([photo(), photo(40, 90)])
    reference = Idefics3Processor(
        image_processor=vlm.image_processor,
        tokenizer=vlm.tokenizer,
        image_seq_len=4,
        chat_template=vlm.chat_template,
    )(
        text=[vlm.render(r)],
        images=[[resize_longest(im, vlm.max_image_side) for im in r.images]],
        return_tensors="pt",
    )
    mine = vlm.prepare(r)
    assert mine["input_ids"].tolist() == reference["input_ids"].tolist()
    assert mine["pixel_values"].shape == reference["pixel_values"].shape


def test_greedy_is_deterministic_and_n_copies(backends: dict[str, TransformersVLM]) -> None:
    vlm = backends["qwen2_5_vl"]
    r = request([photo()], temperature=0.0, n=3, seed=None)
    first, second = vlm.generate([r, r])
    texts = [s.raw_text for s in first.samples]
    assert texts == [s.raw_text for s in second.samples]
    assert len(set(texts)) == 1 and len(texts) == 3


def test_seeded_sampling_repeats(backends: dict[str, TransformersVLM]) -> None:
    vlm = backends["smolvlm"]
    a, b = vlm.generate([request([photo()], seed=7), request([photo()], seed=7)])
    assert [s.raw_text for s in a.samples] == [s.raw_text for s in b.samples]


def test_a_failing_request_is_a_call_with_an_error(backends: dict[str, TransformersVLM]) -> None:
    vlm = backends["qwen2_5_vl"]
    # An aspect ratio over 200 makes the Qwen image processor raise; the next request still runs.
    bad, good = vlm.generate([request([Image.new("RGB", (600, 2))]), request([photo()], n=1)])
    assert bad.samples == [] and bad.error and "aspect ratio" in bad.error
    assert bad.error_type == "VLMError" and bad.key == "a.jpg#zero-shot"
    assert good.error is None and len(good.samples) == 1


def test_agenerate_and_close(checkpoints: dict[str, Path]) -> None:
    vlm = TransformersVLM(checkpoints["smolvlm"], max_image_side=64)
    calls = asyncio.run(vlm.agenerate([request([photo()], n=1), request([], n=1)]))
    assert [c.error for c in calls] == [None, None]
    vlm.close()
    [after] = vlm.generate([request([photo()])])
    assert after.error and "closed" in after.error


def test_images_are_scaled_down_not_up() -> None:
    big = resize_longest(photo(400, 100), 200)
    assert big.size == (200, 50)
    small = resize_longest(Image.new("L", (30, 20)), 200)
    assert small.size == (30, 20) and small.mode == "RGB"


def test_missing_weights_fail_fast_and_say_how_to_get_them(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as info:
        TransformersVLM("nobody-here/no-such-vlm")
    message = str(info.value)
    assert "huggingface-cli download nobody-here/no-such-vlm" in message and "cache" in message
    assert "--image-encoder" not in message
    with pytest.raises(WeightsNotFoundError, match=r"no config\.json"):
        TransformersVLM(str(tmp_path))
    with pytest.raises(WeightsNotFoundError):
        TransformersVLM(str(tmp_path / "missing-folder"))
    assert time.perf_counter() - start < 1.0


def test_bad_options_are_config_errors(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="dtype"):
        TransformersVLM(checkpoints["smolvlm"], dtype="int8")
    with pytest.raises(ConfigError, match="max_image_side"):
        TransformersVLM(checkpoints["smolvlm"], max_image_side=4)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            TransformersVLM(checkpoints["smolvlm"], device="cuda")


def test_other_checkpoint_types_are_refused(tmp_path: Path) -> None:
    from geosleuth.testing import build_tiny_clip

    build_tiny_clip(tmp_path, projection_dim=32, image_size=28)
    with pytest.raises(WeightsNotFoundError, match="'clip' checkpoint"):
        TransformersVLM(str(tmp_path))


def test_a_hub_id_resolves_from_the_local_cache(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An id already in the HF cache loads with no network (the cache layout: refs + snapshots)."""
    import shutil

    from huggingface_hub import constants

    repo = tmp_path / "models--tiny--smolvlm"
    commit = "0" * 40
    shutil.copytree(checkpoints["smolvlm"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    vlm = TransformersVLM("tiny/smolvlm")
    assert vlm.path == repo / "snapshots" / commit and vlm.model == "tiny/smolvlm"
    assert len(vlm.fingerprint) == 64
    vlm.close()
