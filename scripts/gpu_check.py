"""The CUDA paths, on any machine with a GPU and no model downloads: tiny random models built here.

* the in-process VLM backend (Qwen2.5-VL and SmolVLM class) on cuda in bfloat16 and float32:
  records, greedy determinism, greedy agreement with the CPU, seconds per request;
* a CLIP image encoder on cuda against the CPU (same embeddings within tolerance);
* GeoCLIP's location encoder on cuda against the CPU, and its throughput (needs ``geoclip``
  installed with ``--no-deps``).

    PYTHONPATH=src python scripts/gpu_check.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def vlm_check(folder: Path, family: str) -> dict[str, Any]:
    from geosleuth.agents.vlm.base import VLMRequest
    from geosleuth.agents.vlm.transformers_backend import TransformersVLM
    from geosleuth.testing import build_tiny_vlm

    path = build_tiny_vlm(folder / family, family)  # type: ignore[arg-type]
    photo = Image.new("RGB", (320, 240), (40, 120, 200))

    def request(temperature: float, n: int) -> VLMRequest:
        return VLMRequest(
            key=f"{family}#t{temperature}",
            variant="zero-shot",
            system="Locate the photo.",
            text="Where was this photo taken? Answer with JSON.",
            images=[photo],
            n=n,
            temperature=temperature,
            max_tokens=48,
            structured=False,
            seed=1,
        )

    out: dict[str, Any] = {}
    greedy: dict[str, str] = {}
    for device, dtype in (("cpu", "float32"), ("cuda", "float32"), ("cuda", "bfloat16")):
        vlm = TransformersVLM(path, device=device, dtype=dtype)
        vlm.generate([request(0.0, 1)])  # warm-up
        t0 = time.perf_counter()
        a, b, sampled = vlm.generate([request(0.0, 1), request(0.0, 1), request(1.0, 4)])
        seconds = (time.perf_counter() - t0) / 3
        greedy[f"{device}/{dtype}"] = a.samples[0].raw_text
        out[f"{device}/{dtype}"] = {
            "errors": [c.error for c in (a, b, sampled) if c.error],
            "greedy_repeatable": a.samples[0].raw_text == b.samples[0].raw_text,
            "sampled": len(sampled.samples),
            "prompt_tokens": a.usage.prompt_tokens,
            "seconds_per_request": round(seconds, 4),
        }
        vlm.close()
    out["cuda_float32_greedy_equals_cpu"] = greedy["cuda/float32"] == greedy["cpu/float32"]
    return out


def clip_check(folder: Path) -> dict[str, Any]:
    from geosleuth.retrieval.hf_clip import HFImageEncoder
    from geosleuth.testing import build_tiny_clip

    path = build_tiny_clip(folder / "clip")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)) for _ in range(16)]
    cpu = HFImageEncoder(str(path), device="cpu").encode(images)
    gpu = HFImageEncoder(str(path), device="cuda").encode(images)
    return {"max_abs_diff": float(np.abs(cpu - gpu).max()), "dim": int(cpu.shape[1])}


def location_check() -> dict[str, Any]:
    try:
        from geosleuth.retrieval.location import GeoCLIPLocationEncoder

        cpu_enc = GeoCLIPLocationEncoder(device="cpu")
        gpu_enc = GeoCLIPLocationEncoder(device="cuda", batch_size=65536)
    except Exception as exc:  # geoclip not installed: say so and go on
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-90, 90, 2000), rng.uniform(-180, 180, 2000)])
    diff = float(np.abs(cpu_enc.encode(pts) - gpu_enc.encode(pts)).max())
    big = np.column_stack([rng.uniform(-90, 90, 100_000), rng.uniform(-180, 180, 100_000)])
    gpu_enc.encode(big[:1000])
    t0 = time.perf_counter()
    gpu_enc.encode(big)
    gpu_s = time.perf_counter() - t0
    return {"max_abs_diff": diff, "gallery_100k_seconds_cuda": round(gpu_s, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch

    results: dict[str, Any] = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, fn in (
            ("vlm_qwen2_5_vl", lambda: vlm_check(folder, "qwen2_5_vl")),
            ("vlm_smolvlm", lambda: vlm_check(folder, "smolvlm")),
            ("clip_encoder", lambda: clip_check(folder)),
            ("location_encoder", location_check),
        ):
            t0 = time.perf_counter()
            try:
                results[name] = fn()
            except Exception as exc:  # report every check, whatever fails
                results[name] = {"failed": f"{type(exc).__name__}: {exc}"}
            results[name]["check_seconds"] = round(time.perf_counter() - t0, 2)
            print(name, json.dumps(results[name]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
