"""Rows of a users file: CSV with a header `identifier,password` (the password column
optional), or JSON lines with the same keys. Pure apart from reading the file.

A row is named by its line in the file (the CSV header is line 1), so an operator can find it.
A row that can never be created is reported with the field at fault; the others still go.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from dispatcher.catapush.users import identifier_problem, password_problem
from dispatcher.errors import ConfigurationError

COLUMNS = ("identifier", "password")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclass(frozen=True, slots=True)
class UserRow:
    row: int
    identifier: str
    # None: the file gives none, one is generated.
    password: str | None


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.field}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "reason": self.reason}


def check_row(row: int, identifier: Any, password: Any) -> UserRow | RowError:
    if identifier is None or identifier == "":
        return RowError(row, "identifier", "required")
    if not isinstance(identifier, str):
        return RowError(row, "identifier", f"must be a string, not {type(identifier).__name__}")
    problem = identifier_problem(identifier)
    if problem is not None:
        return RowError(row, "identifier", problem)
    if password is None or password == "":
        return UserRow(row, identifier, None)
    if not isinstance(password, str):
        return RowError(row, "password", f"must be a string, not {type(password).__name__}")
    problem = password_problem(password)
    # Never the password itself in the reason: the report is printed.
    return RowError(row, "password", problem) if problem else UserRow(row, identifier, password)


def is_json_lines(path: Path, first_line: str) -> bool:
    return path.suffix.lower() in JSON_SUFFIXES or first_line.lstrip().startswith("{")


def _csv_rows(handle: IO[str], source: str) -> Iterator[UserRow | RowError]:
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        return
    names = [name.strip().lower() for name in header]
    unknown = [name for name in names if name not in COLUMNS]
    if unknown or "identifier" not in names or len(set(names)) != len(names):
        raise ConfigurationError(
            f"{source}: line 1: the header must be identifier,password (password optional), "
            f"not {','.join(header)!r}"
        )
    at = {name: index for index, name in enumerate(names)}
    password_at = at.get("password")
    for fields in reader:
        # The line the row ends on: a quoted field may span lines.
        row_number = reader.line_num
        if not fields or all(not field.strip() for field in fields):
            continue
        if len(fields) > len(names):
            yield RowError(row_number, "row", f"{len(fields)} columns, the header has {len(names)}")
            continue
        identifier = fields[at["identifier"]] if at["identifier"] < len(fields) else None
        password = (
            fields[password_at] if password_at is not None and password_at < len(fields) else None
        )
        yield check_row(row_number, identifier, password)


def _json_rows(handle: IO[str]) -> Iterator[UserRow | RowError]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield RowError(number, "row", f"not valid JSON ({exc})")
            continue
        if not isinstance(data, dict):
            yield RowError(number, "row", f"must be a JSON object, not {type(data).__name__}")
            continue
        unknown = sorted(set(data) - set(COLUMNS))
        if unknown:
            yield RowError(number, unknown[0], "unknown key (expected identifier, password)")
            continue
        yield check_row(number, data.get("identifier"), data.get("password"))


def read_rows(path: Path) -> Iterator[UserRow | RowError]:
    """Every row of the file, checked. Raises `ConfigurationError` when the file cannot be
    read at all (missing, not UTF-8, a CSV header that is not identifier,password)."""
    source = str(path)
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigurationError(f"{source}: cannot be read ({exc.strerror or exc})") from exc
    with handle:
        try:
            first = handle.readline()
            handle.seek(0)
            if is_json_lines(path, first):
                yield from _json_rows(handle)
            else:
                yield from _csv_rows(handle, source)
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
        except csv.Error as exc:
            raise ConfigurationError(f"{source}: not readable as CSV ({exc})") from exc


def count_rows(path: Path) -> int | None:
    """Rows to expect, for a progress bar's ETA: lines, less a CSV header."""
    try:
        with path.open("rb") as handle:
            first = handle.readline()
            lines = (1 if first.strip() else 0) + sum(1 for line in handle if line.strip())
    except OSError:
        return None
    header = 0 if is_json_lines(path, first.decode("utf-8", "replace")) else 1
    return max(0, lines - header)
