"""``geosleuth chat``: the script modes through Typer's runner, the interactive session through a
pseudo-terminal (pexpect), as a person would drive it."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from typer.testing import CliRunner

from conftest import FIXTURES, ROOT
from geosleuth.cli import app

runner = CliRunner()
RIVOLI = str(ROOT / "examples" / "rue-de-rivoli.jpg")


def chat(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["chat", *args, "--offline"], input=input)


def turns_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def evidence_ids(photo: str) -> set[str]:
    res = runner.invoke(app, ["locate", photo, "--json", "--offline"])
    assert res.exit_code == 0, res.output
    return {e["id"] for e in json.loads(res.stdout)["evidence"]}


@pytest.mark.slow
def test_ask_json_answers_each_question_in_one_conversation():
    res = chat(
        RIVOLI,
        "--ask",
        "Which country?",
        "--ask",
        "Could it be Belgium?",
        "--ask",
        "it was taken in Lisbon",
        "--json",
    )
    assert res.exit_code == 0, res.output
    country, belgium, lisbon = turns_of(res.stdout)
    for n, turn in enumerate((country, belgium, lisbon), start=1):
        assert {"question", "answer", "cited_evidence", "tool_calls", "prediction"} <= set(turn)
        assert turn["index"] == n and turn["engine"] == "rules" and turn["answer"]
        assert {"place", "point", "probability", "status"} <= set(turn["prediction"])

    assert country["question"] == "Which country?"
    assert country["prediction"]["country_code"] == "FR" and country["prediction"]["status"] == "located"
    assert {"text.domain.1", "text.postcode.1"} <= set(country["cited_evidence"])
    known = evidence_ids(RIVOLI)
    for turn in (country, belgium):
        assert set(turn["cited_evidence"]) <= known and not turn["dropped_citations"]

    assert belgium["intent"] == "could_be"
    assert [c["name"] for c in belgium["tool_calls"]] == ["check_place"]
    call = belgium["tool_calls"][0]
    assert call["arguments"] and call["result"]
    assert belgium["answer"].startswith("No")  # the verdict leads the answer
    assert belgium["prediction"]["country_code"] == "FR"

    (hint,) = lisbon["hints"]
    assert hint["status"] == "conflict" and hint["country_code"] == "PT"
    assert {"text.domain.1", "text.postcode.1"} <= set(hint["conflicting_evidence"])
    assert set(hint["conflicting_evidence"]) <= set(lisbon["cited_evidence"])
    assert lisbon["prediction"]["country_code"] == "FR"  # not applied until the user insists


@pytest.mark.slow
def test_questions_from_stdin_one_per_line():
    res = chat(RIVOLI, "--json", input="where?\n\nwhy?\n")
    assert res.exit_code == 0, res.output
    turns = turns_of(res.stdout)
    assert [t["question"] for t in turns] == ["where?", "why?"]  # the blank line is skipped
    assert [t["intent"] for t in turns] == ["where", "why"]
    assert all(t["cited_evidence"] for t in turns)


@pytest.mark.slow
def test_text_mode_prints_each_question_and_answer():
    res = chat(RIVOLI, input="how sure?\n")
    assert res.exit_code == 0, res.output
    q, a = res.stdout.strip().splitlines()
    assert q == "Q: how sure?" and a.startswith("A: ")


@pytest.mark.slow
def test_save_then_load_continues_the_conversation(tmp_path):
    saved = tmp_path / "talk.json"
    res = chat(RIVOLI, "--ask", "Which country?", "--ask", "summer 2024", "--save", str(saved), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(saved.read_text())["format"] == "geosleuth-conversation"
    res = runner.invoke(
        app, ["chat", "--load", str(saved), "--ask", "how sure?", "--json", "--save", str(saved)]
    )
    assert res.exit_code == 0, res.output
    (turn,) = turns_of(res.stdout)
    assert turn["index"] == 3 and turn["prediction"]["country_code"] == "FR"
    data = json.loads(saved.read_text())
    assert [t["question"] for t in data["turns"]] == ["Which country?", "summer 2024", "how sure?"]
    assert [h["kind"] for h in data["hints"]] == ["date"]


@pytest.mark.slow
def test_a_failed_turn_is_one_line_and_the_next_question_is_answered():
    res = chat(RIVOLI, "--ask", "x" * 5000, "--ask", "Which country?", "--json")
    assert res.exit_code == 2  # the worst error: a bad question is bad usage
    failed, ok = turns_of(res.stdout)
    assert failed["error_type"] == "ConfigError" and "limit" in failed["error"]
    assert ok["index"] == 1 and ok["prediction"]["country_code"] == "FR"
    assert res.stderr.count("geosleuth: error: ") == 1 and "Traceback" not in res.output


def test_a_missing_photo_is_one_line_and_exit_1():
    res = chat(str(FIXTURES / "missing.jpg"), "--ask", "where?")
    assert res.exit_code == 1
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geosleuth: error: ") and "no such file" in lines[0]


def test_a_bad_photo_with_json_is_one_json_error_object():
    res = chat(str(FIXTURES / "missing.jpg"), "--ask", "where?", "--json")
    assert res.exit_code == 1
    [line] = res.stdout.strip().splitlines()
    obj = json.loads(line)
    assert obj["error_type"] == "ImageNotFoundError" and obj["source"].endswith("missing.jpg")
    assert res.stderr.count("geosleuth: error: ") == 1


def test_a_corrupt_photo_is_one_line_and_exit_1():
    res = chat(str(FIXTURES / "truncated.jpg"), "--ask", "where?")
    assert res.exit_code == 1 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "truncated" in res.stderr


@pytest.mark.parametrize(
    "args,words",
    [
        (["--ask", "where?", "--ask", "  "], "--ask #2 is empty"),
        (["--load", "talk.json"], "either photos or --load"),
        ([], "--ask"),  # a photo on stdin leaves no stdin for questions
    ],
)
def test_bad_usage_is_exit_2_before_anything_is_located(args, words, monkeypatch):
    import geosleuth.agents.pipeline as pipeline

    def no_heavy_work(*a: object, **k: object) -> None:
        raise AssertionError("the pipeline was built for a command that cannot run")

    monkeypatch.setattr(pipeline, "build_deps", no_heavy_work)
    photo = "-" if not args else RIVOLI
    res = chat(photo, *args)
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("geosleuth: error: ") and words in res.stderr


def test_no_photo_and_no_load_is_exit_2():
    res = runner.invoke(app, ["chat", "--ask", "where?"])
    assert res.exit_code == 2 and "--load" in res.stderr


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"format": "something else"}',
        '{"format": "geosleuth-conversation", "version": 1, "photos": [{"number": "x"}]}',
    ],
)
def test_loading_a_damaged_conversation_is_a_config_error(tmp_path, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    res = runner.invoke(app, ["chat", "--load", str(bad), "--ask", "where?"])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geosleuth: error: ") and "Traceback" not in res.output


def test_locate_options_become_the_same_settings(monkeypatch):
    """chat passes --vlm-url and the rest through exactly as locate does."""
    import importlib

    from geosleuth.errors import ConfigError

    locate_cli = importlib.import_module("geosleuth.cli.locate")  # the package's `locate` is the command

    seen = []

    def capture(settings, err=None):  # type: ignore[no-untyped-def]  # _locator(settings)
        seen.append(settings)
        raise ConfigError("stop here")

    monkeypatch.setattr(locate_cli, "_locator", capture)
    options = [
        "--vlm-url", "http://127.0.0.1:9/v1", "--vlm-model", "tiny", "--vlm-samples", "2",
        "--ocr", "none", "--image-encoder", "geoclip", "--ignore-exif-gps", "--min-probability", "0.4",
    ]  # fmt: skip
    res = chat(RIVOLI, "--ask", "where?", *options)
    assert res.exit_code == 2 and "stop here" in res.stderr
    res = runner.invoke(app, ["locate", RIVOLI, "--offline", *options])
    assert len(seen) == 2
    chat_settings, locate_settings = seen
    assert chat_settings.model_dump() == locate_settings.model_dump()
    s = chat_settings
    assert (s.vlm.base_url, s.vlm.model, s.vlm.samples) == ("http://127.0.0.1:9/v1", "tiny", 2)
    assert s.ocr.engine == "none" and s.retrieval.image_encoder == "geoclip"
    assert s.use_exif_gps is False and s.min_probability == 0.4 and s.offline is True


# -- the interactive session, in a pseudo-terminal --

# The child runs the real CLI; PacedRuleEngine (the rules' answers, one word every 30 ms) makes an
# answer slow enough to stop with Ctrl-C half-way.
PACED = (
    "import sys; import geosleuth.chat.conversation as c; from geosleuth.testing.chat import PacedRuleEngine; "
    "c._default_engine = lambda locator: PacedRuleEngine(0.03); "
)
NO_TOOLKIT = "import sys; sys.modules['prompt_toolkit'] = None; "  # readline's reader
MAIN = "sys.argv = ['geosleuth', *sys.argv[1:]]; from geosleuth.cli import main; main()"


def spawn(prelude: str, *args: str):  # type: ignore[no-untyped-def]
    pexpect = pytest.importorskip("pexpect")
    env = dict(os.environ, TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", NO_COLOR="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    child = pexpect.spawn(
        sys.executable,
        ["-c", prelude + MAIN, "chat", *args, "--offline"],
        cwd=str(ROOT),
        env=env,
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 250),
    )
    return child, pexpect


def prompt(child) -> None:  # type: ignore[no-untyped-def]
    child.expect("geosleuth>")
    time.sleep(0.2)  # keys typed before the reader takes the terminal would be lost


@pytest.mark.slow
def test_interactive_session_with_prompt_toolkit(tmp_path):
    pytest.importorskip("prompt_toolkit")
    saved, report = tmp_path / "talk.json", tmp_path / "photo.html"
    child, pexpect = spawn(PACED, RIVOLI)
    try:
        child.expect("Photo 1")
        child.expect("Paris")  # the short answer, before the first prompt
        prompt(child)
        child.sendline("Which country?")
        child.expect(r"now: Paris, Ile-de-France, France")
        prompt(child)
        child.sendline("/help")
        child.expect("Commands")
        child.expect("/report FILE")
        prompt(child)
        child.sendline("/frobnicate")
        child.expect("unknown command /frobnicate")
        prompt(child)
        child.sendline("why?")  # a long answer: stopped after its first words
        child.expect("Coarse")
        child.sendintr()
        child.expect(r"answer stopped; nothing was recorded")
        prompt(child)
        child.sendline("how \\")  # a trailing backslash goes on to the next line
        child.sendline("sure?")
        child.expect(r"now: Paris")
        prompt(child)
        child.sendline(f"/save {saved}")
        child.expect("saved 2 turns")
        prompt(child)
        child.sendline(f"/save {saved}")
        child.expect("exists; use /save!")  # never replaced silently
        prompt(child)
        child.sendline(f"/report {report} 2")
        child.expect("no photo 2")
        prompt(child)
        child.sendline(f"/report {report}")
        child.expect("wrote photo 1's report")
        prompt(child)
        child.send("half a question")
        child.sendcontrol("c")  # clears the line; the session goes on
        time.sleep(0.2)
        child.sendline(f"/load {saved}")
        child.expect("loaded .*: 2 turns")
        prompt(child)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    data = json.loads(saved.read_text())
    assert [t["question"] for t in data["turns"]] == ["Which country?", "how \nsure?"]
    assert [t["index"] for t in data["turns"]] == [1, 2]
    assert "<html" in report.read_text()[:500].lower()


@pytest.mark.slow
def test_interactive_session_with_readline():
    child, pexpect = spawn(NO_TOOLKIT, RIVOLI)
    try:
        prompt(child)
        child.send("dropped")
        time.sleep(0.2)
        child.sendintr()  # Ctrl-C on a line with text drops the line, not the session
        prompt(child)
        child.sendline("which \\")
        child.expect(r"\.\.\. ")
        child.sendline("country?")
        child.expect(r"now: Paris, Ile-de-France, France")
        prompt(child)
        child.sendintr()  # Ctrl-C on an empty prompt ends the session
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
