"""The in-process backend: a Qwen2-VL / Qwen2.5-VL / Qwen3-VL or SmolVLM / Idefics3 checkpoint run
by transformers in this Python process, from a local folder or the Hugging Face cache.

It needs no torchvision. transformers' full processors for these models pull in a video processor
that imports torchvision, so this module drives the pieces itself, the same way for every family:

* the chat template renders the system message, then the user turn with one image placeholder per
  image (images first, then the text);
* the image processor (its PIL implementation when torchvision is absent) makes the pixel tensors;
* each placeholder is expanded to the model's token layout for that image: Qwen, ``grid_thw.prod()
  // merge_size**2`` ``<|image_pad|>`` tokens; SmolVLM / Idefics3, its tile grid of
  ``<fake_token_around_image><row_r_col_c><image>*k`` blocks plus the global view.

There is no grammar here, so ``structured`` is always ``"none"``: the tolerant parser reads the
answer. Generation is serialised by a lock (one model, one generation at a time); ``agenerate``
runs it in a worker thread.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import inspect
import json
import logging
import threading
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from geosleuth.agents.vlm.base import VLMRequest, call_record, resize_longest
from geosleuth.agents.vlm.parse import parse_guess
from geosleuth.errors import ConfigError, MissingDependencyError, VLMError, WeightsNotFoundError
from geosleuth.schemas import TokenUsage, VLMCall, VLMSample

log = logging.getLogger(__name__)

QWEN_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
IDEFICS_TYPES = ("smolvlm", "idefics3")
SUPPORTED_TYPES = QWEN_TYPES + IDEFICS_TYPES
_DTYPES = ("auto", "float32", "bfloat16", "float16")
_PURPOSE = "The in-process VLM backend (vlm.backend = 'transformers')"


def _require(package: str) -> None:
    """Fail fast (no import) when torch or transformers is missing."""
    if importlib.util.find_spec(package) is None:
        if package == "torch":
            raise MissingDependencyError(
                "torch",
                "retrieval",
                f"{_PURPOSE}; install the CPU build first with pip install torch "
                "--index-url https://download.pytorch.org/whl/cpu, then",
            )
        raise MissingDependencyError(package, "retrieval", _PURPOSE)


def _read_chat_template(folder: Path, tokenizer: Any) -> str:
    """The checkpoint's chat template: chat_template.jinja/.json (the processor's), processor_config,
    then the tokenizer's."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    for name in ("chat_template.json", "processor_config.json"):
        path = folder / name
        if path.is_file():
            try:
                template = json.loads(path.read_text()).get("chat_template")
            except (OSError, ValueError):
                template = None
            if isinstance(template, str) and template:
                return template
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        return template
    raise WeightsNotFoundError(
        str(folder),
        "the checkpoint has no chat template (chat_template.jinja, chat_template.json or tokenizer_config)",
    )


class TransformersVLM:
    """A VLM checkpoint run in this process (see the module docstring).

    ``model`` is a folder or a Hugging Face id already in the local cache; nothing is downloaded.
    ``device`` is ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or ``"auto"`` (CUDA when available);
    ``dtype`` is ``"auto"`` (the checkpoint's, float32 on CPU when it is float16), ``"float32"``,
    ``"bfloat16"`` or ``"float16"``. Images are scaled down to ``max_image_side`` before the image
    processor sees them.

    Example::

        vlm = TransformersVLM("HuggingFaceTB/SmolVLM-256M-Instruct")
        [call] = vlm.generate([VLMRequest(key="a.jpg", variant="zero-shot", system=..., text=..., images=[img])])
    """

    name = "transformers"

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        max_image_side: int = 1024,
        cache_dir: Path | None = None,
    ) -> None:
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype={dtype!r} is not one of {', '.join(_DTYPES)}")
        if max_image_side < 28:
            raise ConfigError(f"max_image_side={max_image_side} is too small; use at least 28 (e.g. 1024)")
        _require("torch")
        _require("transformers")
        self.model = str(model)
        # Before torch and transformers are imported: a missing checkpoint fails in milliseconds.
        self.path = _resolve(self.model)
        self.max_image_side = max_image_side
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._load(device, dtype)

    # -- loading --

    def _load(self, device: str, dtype: str) -> None:
        import torch
        import transformers

        from geosleuth.retrieval.base import quiet_transformers

        what = f"VLM {self.model!r}"
        with quiet_transformers():
            config = transformers.AutoConfig.from_pretrained(self.path, local_files_only=True)
        self.model_type = str(config.model_type)
        if self.model_type not in SUPPORTED_TYPES:
            raise WeightsNotFoundError(
                what,
                f"is a {self.model_type!r} checkpoint; the transformers backend reads "
                f"{', '.join(SUPPORTED_TYPES)} checkpoints (serve others with vLLM: geosleuth vlm serve)",
            )
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"device={device!r} but this torch sees no CUDA GPU; use device='cpu' or 'auto'"
            )
        self.device = device
        with quiet_transformers():
            model: Any = transformers.AutoModelForImageTextToText.from_pretrained(
                self.path,
                local_files_only=True,
                dtype="auto" if dtype == "auto" else getattr(torch, dtype),
            )
            if device == "cpu" and model.dtype == torch.float16:
                model = model.float()  # float16 matmuls are slow or missing on CPU
            self._model: Any = model.to(device).eval()
            self.tokenizer: Any = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            self.image_processor: Any = transformers.AutoImageProcessor.from_pretrained(
                self.path, local_files_only=True
            )
        self.chat_template = _read_chat_template(self.path, self.tokenizer)
        self._forward_args = set(inspect.signature(self._model.forward).parameters)
        self._eos_ids = self._find_eos_ids(config)
        pad = self.tokenizer.pad_token_id
        self._pad_id = int(pad) if pad is not None else self._eos_ids[0]
        if self.model_type in QWEN_TYPES:
            self.image_token = getattr(self.tokenizer, "image_token", None) or "<|image_pad|>"
        else:
            self.image_token = getattr(self.tokenizer, "image_token", None) or "<image>"
            self._image_seq_len = self._idefics_seq_len(config)
        token_id: Any = self.tokenizer.convert_tokens_to_ids(self.image_token)
        self.image_token_id = int(token_id)
        log.info("loaded %s (%s) on %s, %s", self.model, self.model_type, device, self._model.dtype)

    def _find_eos_ids(self, config: Any) -> list[int]:
        ids: list[int] = []
        gen = getattr(self._model, "generation_config", None)
        for source in (getattr(gen, "eos_token_id", None), self.tokenizer.eos_token_id):
            for i in source if isinstance(source, list | tuple) else [source]:
                if i is not None and int(i) not in ids:
                    ids.append(int(i))
        # Chat models end a turn with these even where a config forgets to say so.
        for token in ("<|im_end|>", "<end_of_utterance>"):
            i = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(i, int) and i != self.tokenizer.unk_token_id and i not in ids:
                ids.append(i)
        if not ids:
            raise WeightsNotFoundError(f"VLM {self.model!r}", "names no end-of-sequence token in its configs")
        return ids

    def _idefics_seq_len(self, config: Any) -> int:
        proc = self.path / "processor_config.json"
        if proc.is_file():
            try:
                seq_len = json.loads(proc.read_text()).get("image_seq_len")
            except (OSError, ValueError):
                seq_len = None
            if isinstance(seq_len, int) and seq_len > 0:
                return seq_len
        vision = config.vision_config
        return int((vision.image_size // vision.patch_size) ** 2 / (config.scale_factor**2))

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the weight files (see :func:`geosleuth.retrieval.base.weights_fingerprint`)."""
        from geosleuth.retrieval.base import weights_fingerprint

        return weights_fingerprint(self.path, self.cache_dir)

    # -- protocol --

    def generate(self, requests: Sequence[VLMRequest]) -> list[VLMCall]:
        """One :class:`VLMCall` per request, in order; a failed request is a call with ``error``."""
        with self._lock:
            return [self._call(r) for r in requests]

    async def agenerate(self, requests: Sequence[VLMRequest]) -> list[VLMCall]:
        return await asyncio.to_thread(self.generate, list(requests))

    def close(self) -> None:
        """Free the model (and the GPU memory it held). Later requests fail with an error each."""
        with self._lock:
            if getattr(self, "_model", None) is None:
                return
            self._model = None
            gc.collect()
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()

    def __enter__(self) -> TransformersVLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request --

    def _call(self, r: VLMRequest) -> VLMCall:
        start = time.perf_counter()
        base: dict[str, Any] = {"model": self.model, "backend": self.name, "structured": "none"}
        try:
            samples, usage = self._run(r)
        except Exception as exc:  # never lose the record: the call says what went wrong
            log.warning("%s: generation failed: %s", r.key, exc)
            return call_record(
                r,
                **base,
                latency_s=round(time.perf_counter() - start, 4),
                error=f"{type(exc).__name__}: {exc}",
                error_type=type(exc).__name__ if isinstance(exc, VLMError) else VLMError.__name__,
            )
        return call_record(
            r, **base, samples=samples, usage=usage, latency_s=round(time.perf_counter() - start, 4)
        )

    def _run(self, r: VLMRequest) -> tuple[list[VLMSample], TokenUsage]:
        import torch

        if self._model is None:
            raise VLMError(f"the transformers backend for {self.model!r} was closed")
        inputs = self.prepare(r)
        prompt_len = int(inputs["input_ids"].shape[1])
        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        greedy = r.temperature == 0.0
        options: dict[str, Any] = {
            "max_new_tokens": r.max_tokens,
            "eos_token_id": self._eos_ids,
            "pad_token_id": self._pad_id,
            "do_sample": not greedy,
            # Greedy decoding gives n identical answers: decode once, copy it.
            "num_return_sequences": 1 if greedy else r.n,
        }
        if not greedy:
            options.update(temperature=r.temperature, top_p=r.top_p, top_k=0)
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            if r.seed is not None:
                torch.manual_seed(r.seed)
            out = self._model.generate(**inputs, **options)
        sequences = out[:, prompt_len:].tolist()
        if greedy:
            sequences = sequences * r.n
        samples: list[VLMSample] = []
        completion = 0
        for i, tokens in enumerate(sequences):
            end = next((j for j, t in enumerate(tokens) if t in self._eos_ids), None)
            if end is None:
                finish = "length" if len(tokens) >= r.max_tokens else "stop"
                kept = tokens
                completion += len(tokens)
            else:
                finish, kept = "stop", tokens[:end]
                completion += end + 1
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            samples.append(parse_guess(text, finish, index=i))
        return samples, TokenUsage(prompt_tokens=prompt_len, completion_tokens=completion)

    # -- inputs, without the torchvision-bound processor --

    def render(self, r: VLMRequest) -> str:
        """The prompt text with one (unexpanded) image placeholder per image, images first."""
        messages: list[dict[str, Any]] = []
        if r.system:
            messages.append({"role": "system", "content": [{"type": "text", "text": r.system}]})
        content: list[dict[str, Any]] = [{"type": "image"} for _ in r.images]
        content.append({"type": "text", "text": r.text})
        messages.append({"role": "user", "content": content})
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )
        found = text.count(self.image_token)
        if found != len(r.images):
            raise VLMError(
                f"the chat template of {self.model!r} rendered {found} {self.image_token} placeholders "
                f"for {len(r.images)} images"
            )
        return str(text)

    def prepare(self, r: VLMRequest) -> dict[str, Any]:
        """Model inputs (``input_ids``, ``attention_mask``, pixels and their layout) for one request."""
        import torch

        text = self.render(r)
        pixels: dict[str, Any] = {}
        if r.images:
            images = [resize_longest(im, self.max_image_side) for im in r.images]
            if self.model_type in QWEN_TYPES:
                pixels = dict(self.image_processor(images=images, return_tensors="pt"))
                merge = int(getattr(self.image_processor, "merge_size", 2))
                counts = [int(g.prod()) // merge**2 for g in pixels["image_grid_thw"]]
                blocks = [self.image_token * c for c in counts]
            else:
                from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

                pixels = dict(
                    self.image_processor(images=[images], return_tensors="pt", return_row_col_info=True)
                )
                rows, cols = pixels.pop("rows")[0], pixels.pop("cols")[0]
                blocks = [
                    get_image_prompt_string(
                        rw,
                        cl,
                        self._image_seq_len,
                        fake_token_around_image="<fake_token_around_image>",
                        image_token=self.image_token,
                        global_image_token="<global-img>",
                    )
                    for rw, cl in zip(rows, cols, strict=True)
                ]
            parts = text.split(self.image_token)
            text = parts[0] + "".join(b + p for b, p in zip(blocks, parts[1:], strict=True))
        encoded = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        inputs: dict[str, Any] = {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
        }
        inputs.update({k: v for k, v in pixels.items() if isinstance(v, torch.Tensor)})
        if self.model_type in QWEN_TYPES and "mm_token_type_ids" in self._forward_args:
            inputs["mm_token_type_ids"] = (inputs["input_ids"] == self.image_token_id).to(torch.int32)
        expected = sum(b.count(self.image_token) for b in blocks) if r.images else 0
        got = int((inputs["input_ids"] == self.image_token_id).sum())
        if got != expected:
            raise VLMError(
                f"{self.image_token} did not tokenize as one token ({got} ids for {expected} placeholders); "
                f"the tokenizer of {self.model!r} does not match its model"
            )
        return inputs


def _resolve(model: str) -> Path:
    """The checkpoint folder, with the VLM's own hint when it is missing."""
    from geosleuth.retrieval.base import resolve_weights

    what = f"VLM {model!r}"
    try:
        return resolve_weights(model, what=what)
    except WeightsNotFoundError as exc:
        # resolve_weights' hint names the image-encoder flag; say where a VLM folder goes instead.
        message = str(exc).removeprefix(f"{what}: ")
        message = message.replace("(e.g. --image-encoder ", "(e.g. vlm.model = ")
        raise WeightsNotFoundError(what, message) from exc.__cause__


__all__ = ["SUPPORTED_TYPES", "TransformersVLM", "resize_longest"]
