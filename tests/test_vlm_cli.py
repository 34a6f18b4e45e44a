"""`geosleuth vlm serve` and `geosleuth vlm check`, end to end.

`serve` is exercised with a stand-in `vllm` executable that runs geosleuth's test server on the
port it is given, so the real process handling (start, wait for /health, detach, die early) runs."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from geosleuth.agents.vlm.serve import ServeOptions, launcher, serve_command
from geosleuth.errors import ConfigError
from geosleuth.testing.http import free_port
from geosleuth.testing.openai_server import FakeOpenAIServer, Reply

GEOSLEUTH = [sys.executable, "-m", "geosleuth.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GEOSLEUTH, *args], capture_output=True, text=True, timeout=timeout, env=env)


def fake_vllm(folder: Path, body: str) -> Path:
    """A `vllm` executable on a PATH of its own."""
    exe = folder / "vllm"
    exe.write_text(f"#!{sys.executable}\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_serve_command_has_the_flags_this_workload_needs() -> None:
    cmd = serve_command(
        ServeOptions("Qwen/Qwen2.5-VL-7B-Instruct", port=8001, images_per_prompt=6), ["vllm", "serve"]
    )
    assert cmd[:3] == ["vllm", "serve", "Qwen/Qwen2.5-VL-7B-Instruct"]
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert json.loads(cmd[cmd.index("--limit-mm-per-prompt") + 1]) == {"image": 6}
    assert cmd[cmd.index("--port") + 1] == "8001" and "--max-model-len" in flags
    assert "--enable-prefix-caching" in cmd
    config = json.loads(cmd[cmd.index("--structured-outputs-config") + 1])
    assert config == {"backend": "xgrammar", "disable_any_whitespace": True}
    assert not any("guided" in c for c in cmd)


def test_launcher_explains_how_to_get_vllm(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="its own environment"):
        launcher()
    with pytest.raises(ConfigError, match="not an executable Python"):
        launcher(str(tmp_path / "nope" / "python"))
    assert launcher(sys.executable)[1:] == ["-m", "vllm.entrypoints.openai.api_server", "--model"]


def test_dry_run_prints_the_real_command(tmp_path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))
    out = run(
        "vlm", "serve", "Qwen/Qwen2.5-VL-7B-Instruct", "--dry-run", "--", "--dtype", "bfloat16", env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("vllm serve Qwen/Qwen2.5-VL-7B-Instruct --host 127.0.0.1 --port 8000")
    assert out.stdout.strip().endswith("--dtype bfloat16")
    assert "not found on PATH" in out.stderr


def test_serve_waits_for_health_then_detaches(tmp_path) -> None:
    fake_vllm(tmp_path, "import sys\nfrom geosleuth.testing.openai_server import main\nmain(sys.argv[1:])")
    port = free_port()
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "vllm.log"
    out = run(
        "vlm", "serve", "tiny", "--port", str(port), "--detach", "--log", str(log), "--timeout", "60", env=env
    )
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip()
    assert url == f"http://127.0.0.1:{port}/v1"
    pid = int(out.stderr.split("pid ")[1].split(")")[0])
    try:
        check = run("vlm", "check", url, "--json")
        report = json.loads(check.stdout)
        assert check.returncode == 0 and report["ok"] and report["server_kind"] == "vllm"
    finally:
        os.kill(pid, signal.SIGTERM)


def test_serve_fails_fast_when_vllm_dies(tmp_path) -> None:
    fake_vllm(tmp_path, "import sys\nprint('CUDA out of memory', file=sys.stderr)\nsys.exit(3)")
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "vllm.log"
    out = run(
        "vlm", "serve", "tiny", "--port", str(free_port()), "--detach", "--log", str(log), env=env, timeout=60
    )
    assert out.returncode == 1
    assert "exited with code 3" in out.stderr and "CUDA out of memory" in out.stderr


@pytest.fixture
def server():
    with FakeOpenAIServer(model="tiny-vlm") as srv:
        yield srv


def test_check_reports_structured_output_and_latency(server) -> None:
    out = run("vlm", "check", server.base_url)
    assert out.returncode == 0, out.stderr
    assert "models     : tiny-vlm" in out.stdout
    assert "structured : yes" in out.stdout and "usable     : 2/2" in out.stdout
    body = next(r.body for r in server.requests if r.path.endswith("/chat/completions"))
    assert body["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_check_says_when_the_schema_was_ignored(server) -> None:
    server.default = Reply.text("Probably Paris. Final answer: 48.8566, 2.3522")
    out = run("vlm", "check", server.base_url, "--json")
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["usable"] == 2 and report["structured_honoured"] is False


def test_check_fails_on_an_unreachable_server() -> None:
    out = run("vlm", "check", f"http://127.0.0.1:{free_port()}/v1", "--timeout", "2")
    assert out.returncode == 1
    assert "could not connect" in out.stdout and "Is the server running?" in out.stdout
