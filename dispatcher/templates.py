"""Notification templates: one TOML file per kind in `DISPATCHER_TEMPLATES_DIR`.

Everything that can be checked without data is checked at load, so a bad folder stops the
worker at start-up with one `ConfigurationError` line instead of dead-lettering every intent
later. What can only fail with data (a missing variable) is an `IntentRefused` at render time,
which `render.render` turns into a dead letter with reason `invalid`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dispatcher.errors import ConfigurationError, IntentRefused
from dispatcher.intents import LOCALE_PATTERN, TEMPLATE_NAME_PATTERN

__all__ = ["RenderedText", "TemplateStore"]

SETTING = "DISPATCHER_TEMPLATES_DIR"
DEFAULT_LOCALE_KEY = "default_locale"
TEXT_KEY = "text"
OPTIONAL_KEYS = ("notificationText", "androidTitle", "fallbackText")
KNOWN_KEYS = (TEXT_KEY, *OPTIONAL_KEYS)

_UNDEFINED_NAME = re.compile(r"""('.*'|".*") is undefined""")


@dataclass(frozen=True, slots=True)
class RenderedText:
    """A template rendered for one locale and one set of variables."""

    text: str
    notification_text: str | None = None
    android_title: str | None = None
    fallback_text: str | None = None


def _normal_locale(locale: str) -> str:
    # `pt-BR`, `pt_BR` and `pt-br` are the same locale to producers and template authors.
    return locale.replace("_", "-").lower()


def _fallback_chain(locale: str) -> list[str]:
    """`pt-BR` -> [`pt-br`, `pt`]: the locale, then each shorter prefix of it."""
    parts = _normal_locale(locale).split("-")
    return ["-".join(parts[:end]) for end in range(len(parts), 0, -1)]


@dataclass(frozen=True, slots=True)
class _Template:
    default_locale: str
    # Normalised locale -> wire key -> compiled value, with the per-key fallbacks already
    # applied, so rendering only has to pick a locale.
    locales: Mapping[str, Mapping[str, Template]]

    def for_locale(self, locale: str | None) -> Mapping[str, Template]:
        for candidate in _fallback_chain(locale) if locale else ():
            if candidate in self.locales:
                return self.locales[candidate]
        return self.locales[self.default_locale]


class TemplateStore:
    """The loaded templates; `render` is the method `dispatcher.render.Templates` calls."""

    def __init__(self, templates: Mapping[str, _Template]) -> None:
        self._templates = dict(templates)

    @classmethod
    def load(cls, directory: Path) -> TemplateStore:
        """Read and compile every `*.toml` in `directory`, or raise `ConfigurationError`."""
        if not directory.exists():
            raise ConfigurationError(f"{SETTING}: {directory} does not exist")
        if not directory.is_dir():
            raise ConfigurationError(f"{SETTING}: {directory} is not a folder")
        try:
            paths = sorted(path for path in directory.iterdir() if path.suffix == ".toml")
        except OSError as exc:
            raise ConfigurationError(
                f"{SETTING}: {directory} cannot be read ({exc.strerror})"
            ) from exc
        if not paths:
            # Most likely the wrong folder: starting would dead-letter every templated intent.
            raise ConfigurationError(f"{SETTING}: {directory} holds no *.toml template")

        # Push text is not HTML, so no autoescape. The immutable sandbox also keeps a
        # template from changing the intent's data, which is reused for every recipient.
        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        templates: dict[str, _Template] = {}
        errors: list[str] = []
        # Every file is checked so that one start-up reports all the problems at once.
        for path in paths:
            problems: list[str] = []
            template = _load_file(env, path, problems)
            errors.extend(f"{path.name}: {problem}" for problem in problems)
            if template is not None:
                templates[path.stem] = template
        if errors:
            raise ConfigurationError(f"{SETTING}: " + "; ".join(errors))
        return cls(templates)

    def names(self) -> frozenset[str]:
        """The template names that can be used, so intake can refuse unknown ones early."""
        return frozenset(self._templates)

    def render(self, name: str, locale: str | None, data: Mapping[str, Any]) -> RenderedText:
        """Render template `name` in `locale` (with fallbacks), or raise `IntentRefused`."""
        template = self._templates.get(name)
        if template is None:
            raise IntentRefused([f"template: {name!r} is not defined in {SETTING}"])
        values: dict[str, str] = {}
        problems: list[str] = []
        for key, compiled in template.for_locale(locale).items():
            try:
                values[key] = compiled.render(data)
            except SecurityError as exc:
                # Data is never compiled, so only the template can break the sandbox.
                problems.append(f"template: {name}.{key}: {exc}")
            except UndefinedError as exc:
                problems.append(_undefined_problem(name, key, str(exc)))
            except Exception as exc:
                # Anything else (`{{ name + 1 }}` with a string name, say) depends only on the
                # template and the data, so a retry would fail the same way: refuse the intent.
                problems.append(f"data: {name}.{key} cannot be rendered: {exc}")
        if problems:
            raise IntentRefused(problems)
        return RenderedText(
            text=values[TEXT_KEY],
            notification_text=values.get("notificationText"),
            android_title=values.get("androidTitle"),
            fallback_text=values.get("fallbackText"),
        )


def _undefined_problem(name: str, key: str, message: str) -> str:
    missing = _UNDEFINED_NAME.fullmatch(message)
    if missing is not None:
        return f"data: {name}.{key} needs {missing.group(1)}, which the intent's data does not give"
    # An attribute or item of a given variable: jinja's message names both.
    return f"data: {name}.{key}: {message}"


def _load_file(
    env: ImmutableSandboxedEnvironment, path: Path, problems: list[str]
) -> _Template | None:
    """One template file, or None with `problems` filled in."""
    if re.fullmatch(TEMPLATE_NAME_PATTERN, path.stem) is None:
        problems.append(f"the name before .toml must match {TEMPLATE_NAME_PATTERN}")
        return None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(f"cannot be read ({exc.strerror})")
        return None
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        problems.append(f"is not UTF-8 (line {line})")
        return None
    try:
        document = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        # The message carries the line and column: "Invalid value (at line 3, column 8)".
        problems.append(f"invalid TOML: {exc}")
        return None

    default_locale = document.get(DEFAULT_LOCALE_KEY)
    if default_locale is None:
        problems.append(f"{DEFAULT_LOCALE_KEY}: is required")
    elif not isinstance(default_locale, str):
        problems.append(f"{DEFAULT_LOCALE_KEY}: must be a string")
        default_locale = None

    tables: dict[str, dict[str, Template]] = {}
    spelled: dict[str, str] = {}  # normalised locale -> the table name as written
    for locale, table in document.items():
        if locale == DEFAULT_LOCALE_KEY:
            continue
        if not isinstance(table, dict):
            problems.append(f"{locale}: unknown key; a file holds {DEFAULT_LOCALE_KEY} and tables")
            continue
        if re.fullmatch(LOCALE_PATTERN, locale) is None:
            problems.append(f"[{locale}]: is not a locale name such as en or pt-BR")
            continue
        normal = _normal_locale(locale)
        if normal in spelled:
            problems.append(f"[{locale}]: the same locale as [{spelled[normal]}]")
            continue
        spelled[normal] = locale
        tables[normal] = _compile_table(env, locale, table, problems)

    if default_locale is not None and _normal_locale(default_locale) not in tables:
        problems.append(f"{DEFAULT_LOCALE_KEY}: {default_locale!r} has no [{default_locale}] table")
    if problems or default_locale is None:
        return None

    default = tables[_normal_locale(default_locale)]
    resolved: dict[str, Mapping[str, Template]] = {}
    for normal in tables:
        # A key missing from a locale comes from its shorter locales, then the default:
        # `pt-br` lacking notificationText takes `pt`'s, else the default locale's.
        chain = [default] + [tables[c] for c in reversed(_fallback_chain(normal)) if c in tables]
        merged: dict[str, Template] = {}
        for table in chain:  # the most specific locale last, so its keys win
            merged.update(table)
        resolved[normal] = merged
    return _Template(default_locale=_normal_locale(default_locale), locales=resolved)


def _compile_table(
    env: ImmutableSandboxedEnvironment,
    locale: str,
    table: dict[str, Any],
    problems: list[str],
) -> dict[str, Template]:
    compiled: dict[str, Template] = {}
    for key, value in table.items():
        where = f"[{locale}].{key}"
        if key not in KNOWN_KEYS:
            problems.append(f"{where}: unknown key; expected one of {', '.join(KNOWN_KEYS)}")
        elif not isinstance(value, str):
            problems.append(f"{where}: must be a string, not {type(value).__name__}")
        else:
            try:
                compiled[key] = env.from_string(value)
            except TemplateSyntaxError as exc:
                # The line is counted within the value, which matters for multi-line strings.
                problems.append(f"{where}: {exc.message} (line {exc.lineno})")
    if TEXT_KEY not in table:
        problems.append(f"[{locale}].{TEXT_KEY}: is required")
    return compiled


def load_templates(directory: Path | None) -> TemplateStore | None:
    """The store for `DISPATCHER_TEMPLATES_DIR`, or None when it is not set."""
    return None if directory is None else TemplateStore.load(directory)
