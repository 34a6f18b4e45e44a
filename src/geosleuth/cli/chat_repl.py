"""The interactive ``geosleuth chat`` session: a prompt with history and multi-line input, answers
streamed as they are written, Ctrl-C to stop an answer, and slash commands.

Input: prompt_toolkit when installed (the ``chat`` extra), else the stdlib ``readline``. Both take
one question per Enter; a line that ends with ``\\`` goes on to the next (with prompt_toolkit,
Alt-Enter also starts a new line). History (up/down) lasts the session, or lives in ``--history
FILE``: questions are not written to disk unless asked to.

Ctrl-C during an answer returns to the prompt at once and the answer is dropped: it runs in a
worker thread, and its stream is closed at the next piece it yields (the points where
:meth:`Conversation.stream` may be cancelled without recording a turn), so a half-applied hint
cannot be left behind. Ctrl-C on a non-empty prompt clears it; on an empty prompt it ends the
session, as Ctrl-D and /quit do (exit 0).

Files named by ``/save`` and ``/report`` are never replaced silently: an existing file is refused
unless the command is given with ``!`` (``/save! FILE``); every write goes through a temporary file
and a rename, so an interrupted write leaves the old file whole.
"""

from __future__ import annotations

import difflib
import queue
import shlex
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rich.markup import escape

from geosleuth.cli.chat import _turn_error, short_answer
from geosleuth.errors import EXIT_OK, ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from geosleuth.agents.pipeline import Locator
    from geosleuth.chat import Conversation, Turn

PROMPT = "geosleuth> "
CONTINUATION = "... "
REPORT_FORMATS = {".html": "html", ".htm": "html", ".md": "md", ".json": "json"}
POLL_S = 0.05  # how often the main thread looks up from waiting on an answer (Ctrl-C lands at once anyway)

COMMANDS = {
    "/help": "the commands and the questions I can answer",
    "/save FILE": "save the conversation (JSON); /save! FILE replaces an existing file",
    "/load FILE": "continue a saved conversation instead of this one",
    "/report FILE [N]": "write photo N's explainable report as it stands (.html, .md or .json); /report! replaces",
    "/quit": "end the session (Ctrl-D does too)",
}


class LineReader(Protocol):
    """Reads one question (possibly several lines). EOFError: the user is done (Ctrl-D);
    KeyboardInterrupt: Ctrl-C on an empty prompt."""

    def read(self) -> str: ...

    def close(self) -> None: ...


def line_reader(history: Path | None) -> LineReader:
    """prompt_toolkit's reader when installed, else readline's."""
    try:
        import prompt_toolkit  # noqa: F401
    except ImportError:
        return ReadlineReader(history)
    return ToolkitReader(history)


class ToolkitReader:
    def __init__(self, history: Path | None) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, History, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

        keys = KeyBindings()

        @keys.add("enter")
        def _enter(event: KeyPressEvent) -> None:
            buf = event.current_buffer
            if buf.document.is_cursor_at_the_end and buf.text.endswith("\\"):
                buf.delete_before_cursor(1)
                buf.insert_text("\n")
            else:
                buf.validate_and_handle()

        @keys.add("escape", "enter")
        def _newline(event: KeyPressEvent) -> None:
            event.current_buffer.insert_text("\n")

        @keys.add("c-c")
        def _interrupt(event: KeyPressEvent) -> None:
            if event.current_buffer.text:
                event.current_buffer.reset()
            else:
                event.app.exit(exception=KeyboardInterrupt())

        hist: History = FileHistory(str(history)) if history is not None else InMemoryHistory()
        self._session: PromptSession[str] = PromptSession(
            history=hist,
            key_bindings=keys,
            multiline=True,
            prompt_continuation=lambda width, line, soft: CONTINUATION.rjust(width),
        )

    def read(self) -> str:
        return self._session.prompt(PROMPT)

    def close(self) -> None:
        pass  # FileHistory appends as it goes


class ReadlineReader:
    def __init__(self, history: Path | None) -> None:
        self._history = history
        try:
            import readline
        except ImportError:  # not on every platform: plain input() still works
            self._readline = None
            return
        self._readline = readline
        if history is not None and history.exists():
            readline.read_history_file(history)

    def read(self) -> str:
        lines: list[str] = []
        while True:
            try:
                line = input(CONTINUATION if lines else PROMPT)
            except KeyboardInterrupt:
                # readline still holds what was typed when Ctrl-C came
                typed = self._readline.get_line_buffer() if self._readline is not None else ""
                if not lines and not typed:
                    raise
                print()  # Ctrl-C on a line with text (or inside a block) drops it
                lines = []
                continue
            if line.endswith("\\"):
                lines.append(line[:-1])
                continue
            lines.append(line)
            return "\n".join(lines)

    def close(self) -> None:
        if self._readline is not None and self._history is not None:
            self._readline.write_history_file(self._history)


class _Answer:
    """One answer running in a worker thread: its pieces, then its Turn (or an error), come through
    ``items``. Cancelled, the stream is closed at its next piece."""

    def __init__(self, conv: Conversation, question: str) -> None:
        self.conv = conv
        self.question = question
        self.turns_before = len(conv.turns)
        self.noted = False  # whether the user was told a cancelled answer was recorded anyway
        self.items: queue.Queue[object] = queue.Queue()
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self._work, name="geosleuth-chat-answer", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        stream = self.conv.stream(self.question)
        try:
            for item in stream:
                if self.cancelled.is_set():
                    return  # the finally closes the stream: no turn is recorded
                self.items.put(item)
        except BaseException as exc:  # handed to the main thread
            self.items.put(exc)
        finally:
            stream.close()  # type: ignore[attr-defined]
            self.items.put(_DONE)

    def recorded_anyway(self) -> Turn | None:
        """The turn of a cancelled answer that had already finished (it is in the conversation)."""
        if not self.cancelled.is_set() or self.thread.is_alive() or len(self.conv.turns) <= self.turns_before:
            return None
        return self.conv.turns[self.turns_before]


_DONE = object()


class Session:
    """The prompt loop over one conversation (``/load`` swaps it for another)."""

    def __init__(
        self,
        conv: Conversation,
        locator: Locator,
        *,
        history: Path | None = None,
        console: Console,
        reader: LineReader | None = None,
    ) -> None:
        self.conv = conv
        self.locator = locator
        self.out = console
        self.reader = reader if reader is not None else line_reader(history)
        self._running: _Answer | None = None

    def run(self) -> int:
        """The session until Ctrl-D, Ctrl-C on an empty prompt, or /quit: exit code 0."""
        self._intro()
        try:
            while True:
                self._late_note()
                try:
                    text = self.reader.read().strip()
                except (EOFError, KeyboardInterrupt):
                    self.out.print()
                    break
                if not text:
                    continue
                if text.startswith("/"):
                    if self.command(text) == "quit":
                        break
                    continue
                self.answer(text)
        finally:
            self.reader.close()
        return EXIT_OK

    # -- answers --

    def answer(self, question: str) -> Turn | None:
        """Stream the answer to ``question``; None when it failed or Ctrl-C stopped it."""
        from geosleuth.chat import Turn

        if not self._wait_for_cancelled():
            return None
        job = _Answer(self.conv, question)
        self._running = job
        item: object = None
        wrote = False
        try:
            while not isinstance(item, Turn | BaseException) and item is not _DONE:
                try:
                    item = job.items.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if isinstance(item, str):
                    sys.stdout.write(item)
                    sys.stdout.flush()
                    wrote = True
        except KeyboardInterrupt:
            if not isinstance(item, Turn):  # else it came just before Ctrl-C: it stands
                job.cancelled.set()
                self.out.print(("\n" if wrote else "") + "[yellow](answer stopped; nothing was recorded)[/]")
                return None
        if wrote:
            print()
        if isinstance(item, BaseException):
            _turn_error(item)
            return None
        if not isinstance(item, Turn):
            return None  # the stream ended without a turn (it cannot; be safe)
        self._footer(item)
        return item

    def _wait_for_cancelled(self) -> bool:
        """A stopped answer may still be finishing a tool call: wait for it (Ctrl-C gives up)."""
        job = self._running
        if job is None or not job.thread.is_alive():
            return True
        self.out.print("[dim](waiting for the stopped answer to finish its current step...)[/]")
        try:
            while job.thread.is_alive():
                job.thread.join(POLL_S)
        except KeyboardInterrupt:
            self.out.print("[yellow](still waiting; ask again in a moment)[/]")
            return False
        return True

    def _late_note(self) -> None:
        job = self._running
        late = job.recorded_anyway() if job is not None and not job.noted else None
        if job is not None and late is not None:
            job.noted = True
            self.out.print(
                f"[dim](the stopped answer had already finished; it is kept as turn {late.index})[/]"
            )

    def _footer(self, turn: Turn) -> None:
        bits = []
        if turn.cited_evidence:
            bits.append("cites " + ", ".join(turn.cited_evidence))
        if turn.tool_calls:
            bits.append("tools " + ", ".join(c.name for c in turn.tool_calls))
        if turn.prediction is not None:
            p = turn.prediction
            where = p.place or "no location"
            bits.append(f"now: {where} (p {p.probability:.2f}, {p.status.replace('_', ' ')})")
        if turn.error:
            bits.append(f"error: {turn.error}")
        if bits:
            self.out.print("[dim]  " + escape(f"[{' · '.join(bits)}]") + "[/]")
        self.out.print()

    def _intro(self) -> None:
        for photo in self.conv.photos:
            self.out.print(
                f"[bold]Photo {photo.number}[/] {escape(photo.label)}: {escape(short_answer(photo.prediction))}"
            )
        if self.conv.turns:
            self.out.print(f"[dim]{_turns(len(self.conv.turns))} loaded from before.[/]")
        engine = self.conv.engine
        if engine is None:
            who = "the evidence, by rule (no VLM: questions about the scene need --vlm-url)"
        elif engine.name == "vlm":
            who = f"the VLM at {self.locator.settings.vlm.base_url}, with the evidence and the tools"
        else:
            who = f"the {engine.name} engine"
        self.out.print(
            f"Answers come from {who}. /help for the commands and questions; Ctrl-C stops an answer; "
            "Ctrl-D quits."
        )

    # -- slash commands --

    def command(self, text: str) -> str | None:
        """Run a slash command; ``"quit"`` ends the session. A failure is one line; the session goes on."""
        try:
            words = shlex.split(text)
        except ValueError as exc:
            self.out.print(
                f'[red]{escape(str(exc))}[/] (quote a file name with spaces: /save "my talk.json")'
            )
            return None
        name, args = words[0].lower(), words[1:]
        force = name.endswith("!")
        base = name.rstrip("!")
        handlers: dict[str, Callable[[list[str], bool], str | None]] = {
            "/help": self._help,
            "/save": self._save,
            "/load": self._load,
            "/report": self._report,
            "/quit": lambda a, f: "quit",
            "/exit": lambda a, f: "quit",
        }
        handler = handlers.get(base)
        if handler is None:
            close = difflib.get_close_matches(base, list(handlers), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            self.out.print(f"[red]unknown command {escape(words[0])}[/]{hint} (/help lists them)")
            return None
        try:
            return handler(args, force)
        except Exception as exc:
            _turn_error(exc)
            return None

    def _help(self, args: list[str], force: bool) -> None:
        from geosleuth.chat.rules import HELP

        self.out.print("[bold]Commands[/]")
        for usage, what in COMMANDS.items():
            self.out.print(f"  {escape(usage):<18} {escape(what)}")
        self.out.print("[bold]Questions[/]")
        self.out.print(f"  {escape(HELP)}")
        if self.conv.engine is not None:
            self.out.print("  With the VLM you may also ask about the scene itself.")
        self.out.print(
            "[bold]Input[/]\n  Enter sends; end a line with \\ (or press Alt-Enter) to go on to the next. "
            "Up/down recall earlier questions. Ctrl-C stops an answer or clears the line; Ctrl-D quits."
        )

    def _save(self, args: list[str], force: bool) -> None:
        path = _target(args, "/save FILE", force)
        self.conv.save(path)
        self.out.print(f"saved {_turns(len(self.conv.turns))} to {escape(str(path))}")

    def _load(self, args: list[str], force: bool) -> None:
        from geosleuth.chat import Conversation

        if len(args) != 1:
            raise ConfigError("usage: /load FILE")
        if not self._wait_for_cancelled():
            return
        self.conv = Conversation.load(Path(args[0]).expanduser(), self.locator)
        self.out.print(f"loaded {escape(args[0])}: {_turns(len(self.conv.turns))}")
        self._intro()

    def _report(self, args: list[str], force: bool) -> None:
        if len(args) not in (1, 2):
            raise ConfigError("usage: /report FILE [PHOTO-NUMBER]")
        number = 1
        if len(args) == 2:
            if not args[1].isdigit():
                raise ConfigError(f"/report's photo number must be a number, got {args[1]!r}")
            number = int(args[1])
        path = _target(args[:1], "/report FILE [N]", force)
        fmt = REPORT_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"/report writes .html, .md or .json; {path.name!r} has none of these suffixes")
        self.conv.report(path, photo=number, fmt=fmt)
        self.out.print(f"wrote photo {number}'s report to {escape(str(path))}")


def _target(args: list[str], usage: str, force: bool) -> Path:
    """The file a command writes: refused when it exists, unless the command ended with ``!``."""
    if len(args) != 1:
        raise ConfigError(f"usage: {usage}")
    path = Path(args[0]).expanduser()
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; name a file")
    if path.exists() and not force:
        cmd = usage.split()[0]
        raise ConfigError(f"{path} exists; use {cmd}! {args[0]} to replace it")
    return path


def _turns(n: int) -> str:
    return f"{n} turn{'' if n == 1 else 's'}"
