"""Every command's --help lists its exit statuses and shows no `<bool>`-style type labels."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from dispatcher.cli import app

# What typer 0.27 and later print for a parameter without a metavar: `<bool>`, `<str>`...
TYPE_LABEL = re.compile(r"<(bool|str|int|float|path|datetime|list\[[^\]]*\]|(int|float) range)>")


def _paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            paths.extend(_paths(sub, (*prefix, name)))
    return paths


PATHS = _paths(typer.main.get_command(app))


def test_every_group_is_walked() -> None:
    names = {" ".join(path) for path in PATHS}
    assert {"", "dlq purge", "users import", "token revoke", "events tail", "demo"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "dispatcher")
def test_help_lists_exit_statuses_without_type_labels(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Exit status:" in result.output
    assert TYPE_LABEL.search(result.output) is None, result.output
