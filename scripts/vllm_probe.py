"""Probe a running vLLM OpenAI server that serves a tiny random checkpoint (see vllm_cpu_check.sh).

Run with geosleuth's own environment (it needs ``openai``; torch and transformers for
the greedy comparison with the in-process backend):

    .venv/bin/python scripts/vllm_probe.py --base-url http://127.0.0.1:8765/v1 --model tiny-qwen2-vl \
        --checkpoint /tmp/tiny-qwen2_vl --limit-images 2 [--save-bodies tests/data/vllm]

What it checks, and prints as one JSON summary:

* GET /version, /v1/models, /health;
* one image (base64 data URL) + text, n=4, with the guess schema sent through
  ``extra_body={"structured_outputs": {"json": schema}}`` and through ``response_format`` json_schema
  (strict), for ``guess_json_schema()`` and for the raw ``VLMGuess.model_json_schema()``; do the
  answers validate as VLMGuess?
* small schemas with one feature each (minimum/maximum, exclusiveMinimum, anyOf with null, type
  lists, enum, minItems...): accepted? followed?
* more images than --limit-mm-per-prompt: the error body;
* greedy decoding against geosleuth's in-process TransformersVLM on the same image: same prompt
  token count, same text.

With --save-bodies it writes the exact JSON bodies the server returned (for the fake test server).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SYSTEM = "You are a geolocation expert. Answer with one JSON object."
TEXT = "Where was this photo taken? Give latitude and longitude."


def http(method: str, url: str, body: Any = None) -> tuple[int, bytes]:
    """(status, raw body) with the standard library, error statuses included."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def make_image(seed: int = 0, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A seeded picture with some structure (sky, ground, a few blocks), no file needed."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[: h // 2] = (110, 160, 220)
    img[h // 2 :] = (90, 120, 60)
    for _ in range(6):
        x, y = int(rng.integers(0, w - 40)), int(rng.integers(h // 3, h - 30))
        img[y : y + 30, x : x + 40] = rng.integers(0, 255, 3)
    img = np.clip(img.astype(np.int16) + rng.integers(-8, 8, img.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(img)


def data_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def from_data_url(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def messages(urls: list[str], text: str = TEXT) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    content.append({"type": "text", "text": text})
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


def validate(texts: list[str], finish: list[str | None]) -> dict[str, Any]:
    """Strict JSON? Valid VLMGuess (strict JSON)? Usable through geosleuth's tolerant parser?"""
    from pydantic import ValidationError

    from geosleuth.agents.vlm.parse import parse_guess
    from geosleuth.schemas import VLMGuess

    ok, json_ok, errors = 0, 0, []
    for t in texts:
        try:
            json.loads(t)
            json_ok += 1
        except ValueError as exc:
            errors.append(f"not strict JSON: {exc}")
            continue
        try:
            VLMGuess.model_validate_json(t)
            ok += 1
        except ValidationError as exc:
            errors.append(str(exc).splitlines()[0] + " " + str(exc).splitlines()[-1][:120])
    parsed = [parse_guess(t, f) for t, f in zip(texts, finish, strict=True)]
    return {
        "strict_json": f"{json_ok}/{len(texts)}",
        "valid_vlmguess": f"{ok}/{len(texts)}",
        "parse_guess_usable": f"{sum(p.usable for p in parsed)}/{len(texts)}",
        "parse_methods": [p.parse for p in parsed],
        "errors": errors[:3],
    }


def chat(client: Any, model: str, **kw: Any) -> tuple[Any, float, str | None]:
    """(completion or None, latency, error text)."""
    import openai

    t = time.perf_counter()
    try:
        out = client.chat.completions.create(model=model, **kw)
        return out, time.perf_counter() - t, None
    except openai.APIStatusError as exc:
        return None, time.perf_counter() - t, f"HTTP {exc.status_code}: {str(exc)[:400]}"


FEATURE_SCHEMAS: dict[str, dict[str, Any]] = {
    "minimum/maximum": {
        "type": "object",
        "properties": {"latitude": {"type": "number", "minimum": -90, "maximum": 90}},
        "required": ["latitude"],
        "additionalProperties": False,
    },
    "narrow minimum/maximum [500, 501]": {
        "type": "object",
        "properties": {"x": {"type": "number", "minimum": 500, "maximum": 501}},
        "required": ["x"],
        "additionalProperties": False,
    },
    "exclusiveMinimum": {
        "type": "object",
        "properties": {"radius_km": {"type": "number", "exclusiveMinimum": 0, "maximum": 20038}},
        "required": ["radius_km"],
        "additionalProperties": False,
    },
    "anyOf string|null": {
        "type": "object",
        "properties": {"city": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "type list [string,null]": {
        "type": "object",
        "properties": {"city": {"type": ["string", "null"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "array of strings + maxItems": {
        "type": "object",
        "properties": {"clues": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
        "required": ["clues"],
        "additionalProperties": False,
    },
    "string maxLength": {
        "type": "object",
        "properties": {"rationale": {"type": "string", "maxLength": 40}},
        "required": ["rationale"],
        "additionalProperties": False,
    },
    "enum": {
        "type": "object",
        "properties": {"continent": {"enum": ["Africa", "Asia", "Europe"]}},
        "required": ["continent"],
        "additionalProperties": False,
    },
    "title/default/description": {
        "type": "object",
        "title": "Guess",
        "properties": {
            "confidence": {"type": "number", "default": 0.5, "title": "Confidence", "description": "0..1"}
        },
        "required": ["confidence"],
    },
}


def bounded(schema: dict[str, Any]) -> dict[str, Any]:
    """The guess schema with every string and list bounded, so even a random model's answer ends."""
    out = json.loads(json.dumps(schema))
    for name, prop in out["properties"].items():
        types = prop.get("type")
        if types == "array":
            prop["maxItems"] = 6
            prop["items"] = dict(prop.get("items", {}), maxLength=60)
        elif types == "string" or (isinstance(types, list) and "string" in types):
            prop["maxLength"] = 300 if name == "rationale" else 60
    return out


def follows(name: str, obj: Any) -> bool:
    """Whether one decoded answer obeys the feature's constraint."""
    if not isinstance(obj, dict):
        return False
    if name == "minimum/maximum":
        v = obj.get("latitude")
        return isinstance(v, int | float) and -90 <= v <= 90
    if name.startswith("narrow"):
        v = obj.get("x")
        return isinstance(v, int | float) and 500 <= v <= 501
    if name == "exclusiveMinimum":
        v = obj.get("radius_km")
        return isinstance(v, int | float) and 0 < v <= 20038
    if name.startswith(("anyOf", "type list")):
        return "city" in obj and (obj["city"] is None or isinstance(obj["city"], str))
    if name.startswith("array"):
        return isinstance(obj.get("clues"), list) and len(obj["clues"]) <= 3
    if name == "string maxLength":
        return isinstance(obj.get("rationale"), str) and len(obj["rationale"]) <= 40
    if name == "enum":
        return obj.get("continent") in ("Africa", "Asia", "Europe")
    return isinstance(obj.get("confidence"), int | float)


def summarise_locate(path: Path) -> None:
    """One line per image of a `geosleuth locate --json` run with a VLM."""
    # Not splitlines(): a random model's text holds U+0085, U+2028 and friends, which JSON leaves raw.
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        p = json.loads(line)
        if "error" in p and "stages" not in p:
            print(f"  {p['source']}: error {p['error']}")
            continue
        v = p.get("vlm") or {}
        stage = next(s for s in p["stages"] if s["name"] == "vlm")
        calls = v.get("calls", [])
        strict = sum(s["parse"] == "json" for c in calls for s in c["samples"])
        print(
            f"  {Path(p['source']).name:22s} vlm {stage['status']}: {v.get('usable_samples')}/"
            f"{v.get('total_samples')} usable, {strict} strict JSON, schema via "
            f"{calls[0]['structured'] if calls else '-'}, {v.get('usage', {}).get('prompt_tokens')} prompt "
            f"tokens, {v.get('seconds')} s; answer: {p['status']}"
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--summarise-locate", type=Path, help="only summarise a `locate --json` output file")
    ap.add_argument("--base-url")
    ap.add_argument("--model")
    ap.add_argument("--checkpoint", help="the served folder, for the greedy comparison in-process")
    ap.add_argument("--limit-images", type=int, default=2)
    ap.add_argument("--save-bodies", type=Path)
    ap.add_argument("--max-tokens", type=int, default=400)
    args = ap.parse_args()
    if args.summarise_locate:
        summarise_locate(args.summarise_locate)
        return 0
    if not (args.base_url and args.model):
        ap.error("--base-url and --model are required to probe a server")

    import openai

    from geosleuth.agents.vlm.base import guess_json_schema
    from geosleuth.schemas import VLMGuess

    root = args.base_url.rstrip("/").removesuffix("/v1")
    client = openai.OpenAI(base_url=args.base_url, api_key="EMPTY", timeout=120, max_retries=0)
    summary: dict[str, Any] = {"base_url": args.base_url, "model": args.model}
    bodies: dict[str, bytes] = {}

    bodies["version.json"] = http("GET", root + "/version")[1]
    summary["version"] = json.loads(bodies["version.json"])
    bodies["models.json"] = http("GET", args.base_url + "/models")[1]
    summary["health"] = http("GET", root + "/health")[0]

    url = data_url(make_image())
    schemas = {
        "guess_json_schema": guess_json_schema(),
        "VLMGuess.model_json_schema": VLMGuess.model_json_schema(),
        "guess_json_schema+maxLength/maxItems": bounded(guess_json_schema()),
    }
    results: dict[str, Any] = {}
    for sname, schema in schemas.items():
        for mode in ("structured_outputs", "response_format"):
            kw: dict[str, Any] = {
                "messages": messages([url]),
                "n": 4,
                "temperature": 0.8,
                "max_tokens": 1024 if "maxLength" in sname else args.max_tokens,
                "seed": 0,
            }
            if mode == "structured_outputs":
                kw["extra_body"] = {"structured_outputs": {"json": schema}}
            else:
                kw["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "guess", "schema": schema, "strict": True},
                }
            out, dt, err = chat(client, args.model, **kw)
            entry: dict[str, Any] = {"latency_s": round(dt, 3)}
            if err:
                entry["error"] = err
            else:
                texts = [c.message.content or "" for c in out.choices]
                entry.update(
                    choices=len(out.choices),
                    finish=[c.finish_reason for c in out.choices],
                    usage=out.usage.model_dump() if out.usage else None,
                    **validate(texts, [c.finish_reason for c in out.choices]),
                    sample=texts[0][:300],
                )
            results[f"{sname} via {mode}"] = entry
    summary["guess_schema"] = results

    features: dict[str, Any] = {}
    for fname, schema in FEATURE_SCHEMAS.items():
        out, dt, err = chat(
            client,
            args.model,
            messages=messages([url]),
            n=4,
            temperature=1.0,
            max_tokens=120,
            seed=1,
            extra_body={"structured_outputs": {"json": schema}},
        )
        if err:
            features[fname] = {"accepted": False, "error": err}
            continue
        decoded = []
        for c in out.choices:
            try:
                decoded.append(json.loads(c.message.content or ""))
            except ValueError:
                decoded.append(None)
        features[fname] = {
            "accepted": True,
            "followed": f"{sum(follows(fname, d) for d in decoded)}/{len(decoded)}",
            "finish": [c.finish_reason for c in out.choices],
            "latency_s": round(dt, 3),
            "sample": (out.choices[0].message.content or "")[:160],
        }
    summary["schema_features"] = features

    # Raw bodies: a structured chat completion with n=2, and the error for one image too many.
    body = {
        "model": args.model,
        "messages": messages([url]),
        "n": 2,
        "temperature": 0.8,
        "max_tokens": 120,
        "seed": 0,
        "structured_outputs": {"json": guess_json_schema()},
    }
    t = time.perf_counter()
    status, raw = http("POST", args.base_url + "/chat/completions", body)
    summary["raw_n2"] = {"status": status, "latency_s": round(time.perf_counter() - t, 3)}
    bodies["chat_completion_n2.json"] = raw
    too_many = dict(body, messages=messages([url] * (args.limit_images + 1)), n=1)
    status, raw = http("POST", args.base_url + "/chat/completions", too_many)
    summary["too_many_images"] = {"status": status, "body": raw.decode(errors="replace")[:400]}
    bodies[f"error_too_many_images_{status}.json"] = raw
    resp_status, raw = http(
        "POST",
        args.base_url + "/chat/completions",
        dict(
            body, n=1, structured_outputs={"json": {"type": "object", "properties": {"x": {"type": "nope"}}}}
        ),
    )
    summary["bad_schema"] = {"status": resp_status, "body": raw.decode(errors="replace")[:400]}
    bodies[f"error_bad_schema_{resp_status}.json"] = raw
    resp_status, raw = http(
        "POST", args.base_url + "/chat/completions", dict(body, n=1, model="no-such-model")
    )
    summary["unknown_model"] = {"status": resp_status, "body": raw.decode(errors="replace")[:400]}
    bodies[f"error_unknown_model_{resp_status}.json"] = raw
    # A bounded answer that ends by itself (finish_reason "stop"), n=2.
    status, raw = http(
        "POST",
        args.base_url + "/chat/completions",
        dict(body, max_tokens=1024, structured_outputs={"json": bounded(guess_json_schema())}),
    )
    bodies["chat_completion_n2_bounded.json"] = raw
    # Text only, and the limit itself, for the record.
    for label, urls in (("text_only", []), (f"{args.limit_images}_images", [url] * args.limit_images)):
        out, dt, err = chat(client, args.model, messages=messages(urls), n=1, max_tokens=16, temperature=0)
        summary[label] = err or {"latency_s": round(dt, 3), "prompt_tokens": out.usage.prompt_tokens}

    # Greedy: vLLM against the in-process backend, on the very pixels vLLM decoded.
    if args.checkpoint:
        out, dt, err = chat(
            client, args.model, messages=messages([url]), n=1, max_tokens=48, temperature=0, seed=0
        )
        if err:
            summary["greedy_vs_transformers"] = err
        else:
            from geosleuth.agents.vlm.base import VLMRequest
            from geosleuth.agents.vlm.transformers_backend import TransformersVLM

            local = TransformersVLM(args.checkpoint)
            [call] = local.generate(
                [
                    VLMRequest(
                        key="probe",
                        variant="greedy",
                        system=SYSTEM,
                        text=TEXT,
                        images=[from_data_url(url)],
                        temperature=0.0,
                        max_tokens=48,
                        structured=False,
                    )
                ]
            )
            local.close()
            summary["greedy_vs_transformers"] = {
                "vllm_prompt_tokens": out.usage.prompt_tokens,
                "transformers_prompt_tokens": call.usage.prompt_tokens,
                "same_text": (out.choices[0].message.content or "") == call.samples[0].raw_text,
                "vllm": (out.choices[0].message.content or "")[:80],
                "transformers": call.samples[0].raw_text[:80],
                "error": call.error,
            }

    if args.save_bodies:
        args.save_bodies.mkdir(parents=True, exist_ok=True)
        for name, data in bodies.items():
            (args.save_bodies / name).write_bytes(data)  # byte for byte what the server sent
        summary["saved"] = sorted(bodies)
    sys.stdout.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
