"""The environment, documented in three places that must agree: the catalogue behind every
`--help` (streamer/ops/environment.py), `.env.example` (rendered from it) and the README's
configuration table; and every variable the code reads is in the catalogue."""

from __future__ import annotations

import re

from streamer.ops.environment import COMMANDS, VARIABLES, env_example
from tests.support.paths import REPO_ROOT

ENV_LINE = re.compile(r"^# ([A-Z][A-Z0-9_]*)=(.*)$")
READ = re.compile(r"\benv\.(?:int|float|text|bool|optional|list|choice|raw|redis_url|existing_file)"
                  r"\(\s*\"([A-Z][A-Z0-9_]*)\"")  # fmt: skip


def env_example_file() -> dict[str, str]:
    """Variable -> default, as `.env.example` lists them."""
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    return {m[1]: m[2] for line in lines if (m := ENV_LINE.match(line))}


def readme_table() -> dict[str, str]:
    """Variable -> its default cell, from the README's configuration table."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("\n## Configuration\n") : text.index("\n## Metrics\n")]
    table: dict[str, str] = {}
    for row in section.splitlines():
        if row.startswith("| `"):
            names_cell, default_cell = row.strip("|").split("|")[:2]
            for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", names_cell):
                table[name] = default_cell
    return table


def test_env_example_is_rendered_from_the_catalogue() -> None:
    """`.env.example` is exactly what `python -m streamer.ops.environment` prints."""
    assert (REPO_ROOT / ".env.example").read_text() == env_example()


def test_env_example_and_the_readme_table_list_the_same_variables_and_defaults() -> None:
    """Every README variable is in `.env.example` and the other way round, and a default
    given in `.env.example` is the one the README shows."""
    example, readme = env_example_file(), readme_table()
    assert sorted(example) == sorted(readme), {
        "only in .env.example": sorted(set(example) - set(readme)),
        "only in the README": sorted(set(readme) - set(example)),
    }
    for name, default in example.items():
        if default:
            assert f"`{default}`" in readme[name], f"{name}: {default!r} vs {readme[name]!r}"


def test_every_variable_the_code_reads_is_documented() -> None:
    """A new `env.int("X", …)` in streamer/ or bridges/ without a catalogue entry fails."""
    sources = [*(REPO_ROOT / "streamer").rglob("*.py"), *(REPO_ROOT / "bridges").rglob("*.py")]
    read = {name for path in sources for name in READ.findall(path.read_text())}
    assert len(read) > 60
    assert read - set(VARIABLES) == set()


def test_command_lists_name_catalogued_variables() -> None:
    """Each command's --help list only names variables the catalogue describes."""
    for command, names in COMMANDS.items():
        assert set(names) <= set(VARIABLES), command
