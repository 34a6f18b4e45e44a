"""Start vLLM's OpenAI server from its own environment, and check any OpenAI-compatible server.

vLLM is never a dependency of geosleuth (it pins its own torch and transformers). ``geosleuth vlm
serve`` finds it on PATH (``vllm serve``) or runs ``PYTHON -m vllm.entrypoints.openai.api_server``
with the interpreter of a separate environment, passes the flags a geolocation workload needs, and
waits until ``/health`` answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from geosleuth.errors import ConfigError, VLMConnectionError, VLMError

INSTALL_HINT = (
    "install vLLM in its own environment (never in geosleuth's): python -m venv ~/vllm-env && "
    "~/vllm-env/bin/pip install vllm; then pass --vllm-python ~/vllm-env/bin/python (or put its "
    "`vllm` on PATH)"
)


@dataclass(frozen=True)
class ServeOptions:
    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_model_len: int = 8192
    images_per_prompt: int = 4
    served_model_name: str | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None
    compact_json: bool = True
    extra: tuple[str, ...] = ()


def launcher(vllm_python: str | None = None) -> list[str]:
    """The command prefix that starts vLLM's OpenAI server, or a :class:`ConfigError` saying how to
    install it."""
    if vllm_python:
        path = shutil.which(vllm_python) or vllm_python
        if not Path(path).is_file() or not os.access(path, os.X_OK):
            raise ConfigError(f"--vllm-python {vllm_python!r} is not an executable Python; {INSTALL_HINT}")
        return [path, "-m", "vllm.entrypoints.openai.api_server", "--model"]
    found = shutil.which("vllm")
    if found is None:
        raise ConfigError(f"vLLM was not found on PATH; {INSTALL_HINT}")
    return [found, "serve"]


def serve_command(opts: ServeOptions, prefix: list[str]) -> list[str]:
    """The full vLLM command for a geolocation workload.

    * ``--limit-mm-per-prompt``: the photo plus neighbour thumbnails;
    * ``--max-model-len``: images cost hundreds to thousands of tokens each;
    * ``--enable-prefix-caching``: the prompt variants of one photo share its image prefix;
    * ``--generation-config vllm``: sampling as requested, not as the checkpoint's defaults say;
    * ``--structured-outputs-config``: xgrammar, and no free whitespace inside the JSON answer
      (models otherwise may pad it until the token limit).
    """
    cmd = [*prefix, opts.model]
    cmd += ["--host", opts.host, "--port", str(opts.port)]
    cmd += ["--max-model-len", str(opts.max_model_len)]
    cmd += ["--limit-mm-per-prompt", json.dumps({"image": opts.images_per_prompt})]
    cmd += ["--enable-prefix-caching"]
    # vLLM's own sampling defaults, not the checkpoint's generation_config.json (some ship
    # near-greedy top_k/top_p, which would make the n samples identical).
    cmd += ["--generation-config", "vllm"]
    if opts.compact_json:
        cmd += [
            "--structured-outputs-config",
            json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
        ]
    if opts.served_model_name:
        cmd += ["--served-model-name", opts.served_model_name]
    if opts.gpu_memory_utilization is not None:
        cmd += ["--gpu-memory-utilization", str(opts.gpu_memory_utilization)]
    if opts.tensor_parallel_size is not None:
        cmd += ["--tensor-parallel-size", str(opts.tensor_parallel_size)]
    return cmd + list(opts.extra)


def base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}/v1"


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_healthy(
    url: str, proc: subprocess.Popen[Any] | None, timeout_s: float, log_file: Path | None
) -> float:
    """Seconds until ``url``'s /health answers 200. Fails fast when the process dies, naming the
    end of its log."""
    root = url.rstrip("/").removesuffix("/v1")
    t0 = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise VLMError(
                f"vLLM exited with code {proc.returncode} before it was ready" + _log_tail(log_file)
            )
        try:
            status, _ = _get(root + "/health", timeout=2.0)
            if status == 200:
                return time.monotonic() - t0
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() - t0 > timeout_s:
            raise VLMConnectionError(
                f"{root}/health did not answer within {timeout_s:.0f} s" + _log_tail(log_file)
            )
        time.sleep(1.0)


def default_log_path(port: int) -> Path:
    """Where a detached server logs when no log file is named: ``vllm-PORT.log`` here."""
    return Path(f"vllm-{port}.log")


@dataclass
class VLLMServer:
    """A vLLM process that has answered ``/health``."""

    process: subprocess.Popen[bytes]
    url: str
    ready_after_s: float
    log_file: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self) -> int:
        """Block until the server exits; its exit code. Ctrl-C stops it first, then propagates."""
        try:
            return self.process.wait()
        except KeyboardInterrupt:
            self.stop(timeout_s=30)
            raise

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout_s``."""
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_vllm(cmd: list[str], url: str, *, timeout_s: float, log_file: Path | None = None) -> VLLMServer:
    """Run ``cmd`` (from :func:`serve_command`) and wait until ``url``'s ``/health`` answers.

    With ``log_file`` the server is detached: it gets its own session (a Ctrl-C here does not reach
    it) and its output is appended to the file, so it outlives this process. Without, it shares this
    terminal. If it dies or does not answer within ``timeout_s`` (or on Ctrl-C) it is stopped, and
    a :class:`VLMError` names the end of its log."""
    if log_file is not None:
        with log_file.open("ab") as stream:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(cmd, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
    else:
        proc = subprocess.Popen(cmd)
    server = VLLMServer(proc, url, 0.0, log_file)
    try:
        server.ready_after_s = wait_healthy(url, proc, timeout_s, log_file)
    except (VLMError, KeyboardInterrupt):
        server.stop()
        raise
    return server


def _log_tail(log_file: Path | None, lines: int = 15) -> str:
    if log_file is None or not log_file.is_file():
        return ""
    tail = log_file.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log_file}:\n" + "\n".join(tail)


def bundled_image() -> Image.Image:
    """The small street photo `vlm check` sends (a Paris street sign, made for geosleuth's tests)."""
    with resources.as_file(resources.files("geosleuth.data") / "check.jpg") as path, Image.open(path) as img:
        return img.convert("RGB")


@dataclass
class CheckReport:
    base_url: str
    models: list[str] = field(default_factory=list)
    server_kind: str = ""
    model: str = ""
    structured: str = ""
    structured_honoured: bool = False
    usable: int = 0
    samples: int = 0
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_answer: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.usable > 0


def check_server(
    url: str,
    model: str | None = None,
    *,
    image: Image.Image | None = None,
    samples: int = 2,
    timeout_s: float = 120.0,
    api_key: str | None = None,
    max_tokens: int = 1024,
) -> CheckReport:
    """List the models, send one real geolocation request, and say what came back."""
    from geosleuth.agents.vlm.openai_backend import OpenAICompatibleVLM
    from geosleuth.agents.vlm.prompting import PromptBuilder, PromptContext
    from geosleuth.config import VLMSettings

    report = CheckReport(base_url=url)
    with OpenAICompatibleVLM(url, model, api_key=api_key, timeout_s=timeout_s, max_retries=1) as backend:
        try:
            report.models = [str(m.get("id")) for m in backend.list_models()]
        except VLMError as exc:
            report.errors.append(str(exc))
            return report
        settings = VLMSettings(samples=samples, temperature=0.7, rag_k=[0], max_tokens=max_tokens)
        request = PromptBuilder(settings).requests(
            image or bundled_image(), PromptContext(), key="vlm-check"
        )[0]
        call = backend.generate([request])[0]
        report.server_kind = backend.profile.name if backend.profile else "unknown"
        report.model = backend.model
        report.structured = call.structured
        report.latency_s = call.latency_s
        report.prompt_tokens = call.usage.prompt_tokens
        report.completion_tokens = call.usage.completion_tokens
        report.samples = len(call.samples)
        report.usable = len(call.usable)
        report.structured_honoured = (
            call.structured != "none"
            and all(s.parse == "json" for s in call.samples if s.finish_reason != "length")
            and bool(call.samples)
        )
        if call.error:
            report.errors.append(call.error)
        if call.samples:
            s = call.samples[0]
            report.first_answer = (
                f"{s.guess.latitude:.4f}, {s.guess.longitude:.4f} ({s.guess.country or '?'}; parsed as {s.parse})"
                if s.guess
                else f"unusable: {s.error}"
            )
    return report
