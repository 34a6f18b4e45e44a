"""Prompt templates: Jinja files in this folder, rendered with strict variables.

* Every variable a template uses must be given, and nothing else may be: a missing or unexpected
  variable is a :class:`~geosleuth.errors.PromptTemplateError` naming it, never an empty string.
* Each template has a sha256 of its source; :func:`prompt_set_hash` combines the templates of one
  prompt so every VLM output records exactly which wording produced it.

Templates can be overridden by a folder of files with the same names (``vlm.prompt_dir``), so users
can try their own wording without forking the package.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from geosleuth.errors import PromptTemplateError

SYSTEM = "system.j2"
GEOLOCATE = "geolocate.j2"
INVESTIGATE = "investigate.j2"
INVESTIGATE_SYSTEM = "investigate_system.j2"
CHAT_SYSTEM = "chat_system.j2"
CHAT_CONTEXT = "chat_context.j2"
CHAT_TRANSCRIPT = "chat_transcript.j2"


@dataclass(frozen=True)
class PromptTemplate:
    """One template: its name, source text, the variables it needs and its hash."""

    name: str
    source: str
    variables: frozenset[str] = field(compare=False)
    sha256: str = field(compare=False)

    @classmethod
    def from_source(cls, name: str, source: str) -> PromptTemplate:
        import jinja2
        from jinja2 import meta

        try:
            parsed = _environment().parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise PromptTemplateError(
                f"prompt template {name!r} has a syntax error at line {exc.lineno}: {exc.message}"
            ) from exc
        variables = frozenset(meta.find_undeclared_variables(parsed))
        return cls(name, source, variables, hashlib.sha256(source.encode("utf-8")).hexdigest())

    def render(self, **values: Any) -> str:
        """Render with exactly the template's variables; anything missing or extra is an error."""
        import jinja2

        missing = sorted(self.variables - values.keys())
        extra = sorted(values.keys() - self.variables)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected {', '.join(extra)}")
            raise PromptTemplateError(
                f"prompt template {self.name!r} needs exactly {sorted(self.variables)}: " + "; ".join(parts)
            )
        try:
            text = _compiled(self.source).render(**values)
        except jinja2.UndefinedError as exc:  # an attribute of a given value that does not exist
            raise PromptTemplateError(f"prompt template {self.name!r}: {exc.message}") from exc
        # Optional sections leave blank lines behind; one blank line between paragraphs is enough.
        return re.sub(r"\n{3,}", "\n\n", text).strip()


@lru_cache(maxsize=64)
def _compiled(source: str) -> Any:
    """The compiled template for a source text (compiling costs ~10 ms; rendering ~0.1 ms)."""
    return _environment().from_string(source)


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=False,
    )


def load_template(name: str, folder: str | Path | None = None) -> PromptTemplate:
    """The template ``name`` from ``folder`` if given (a user's override), else the packaged one."""
    if folder is not None:
        path = Path(folder).expanduser() / name
        if not path.is_file():
            raise PromptTemplateError(
                f"prompt template {name!r} not found in {str(folder)!r}; copy the packaged one from "
                f"{resources.files(__name__) / name} and edit it"
            )
        return PromptTemplate.from_source(name, path.read_text(encoding="utf-8"))
    return _packaged(name)


@lru_cache(maxsize=16)
def _packaged(name: str) -> PromptTemplate:
    ref = resources.files(__name__) / name
    if not ref.is_file():
        raise PromptTemplateError(f"no packaged prompt template {name!r}")
    return PromptTemplate.from_source(name, ref.read_text(encoding="utf-8"))


def prompt_set_hash(*templates: PromptTemplate) -> str:
    """One sha256 over the names and hashes of the templates that make one prompt."""
    h = hashlib.sha256()
    for t in templates:
        h.update(f"{t.name}\0{t.sha256}\0".encode())
    return h.hexdigest()


__all__ = [
    "CHAT_CONTEXT",
    "CHAT_SYSTEM",
    "CHAT_TRANSCRIPT",
    "GEOLOCATE",
    "INVESTIGATE",
    "INVESTIGATE_SYSTEM",
    "SYSTEM",
    "PromptTemplate",
    "load_template",
    "prompt_set_hash",
]
