"""The texts rendered from the contract: the env file (``.env.example`` and new ``.env`` files),
which python-dotenv (compose's syntax) reads back to the same values, and the configuration
reference, one well-formed table row per setting.

That the committed files equal these renderings is tests/contract/test_env_contract.py.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from dotenv import dotenv_values

from mlflow_stack.settings import checks, render
from mlflow_stack.settings.contract import (
    RUNTIMES,
    SECTIONS,
    SETTING_NAMES,
    SETTINGS,
    Setting,
    Settings,
    new_env_values,
)
from mlflow_stack.settings.render import render_env_file, render_reference

HEADER = "| variable | default | check | secret | runtimes | meaning |"


def parsed(text: str) -> dict[str, str | None]:
    return dict(dotenv_values(stream=io.StringIO(text)))


def cells(row: str) -> list[str]:
    """A markdown table row's cells, split at the pipes that are not escaped."""
    assert row.startswith("| ") and row.endswith(" |"), row
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]]


def row_of(text: str, name: str) -> list[str]:
    (row,) = [line for line in text.splitlines() if line.startswith(f"| `{name}` |")]
    return cells(row)


# --- render_env_file ---


def test_rendered_env_file_lists_every_setting_once_with_its_doc() -> None:
    text = render_env_file()
    assigned = [line.split("=")[0] for line in text.splitlines() if line and line[0] != "#"]
    assert sorted(assigned) == sorted(SETTING_NAMES)
    for setting in SETTINGS:
        assert f"{setting.name}={setting.default or ''}\n" in text
        assert setting.doc.split()[0] in text
    assert all(len(line) <= 100 for line in text.splitlines())


def test_rendered_env_file_with_values_round_trips(tmp_path: Path) -> None:
    from mlflow_stack.settings.envfile import read_env_file

    values = new_env_values()
    path = tmp_path / ".env"
    path.write_text(render_env_file(values))
    read = read_env_file(path)
    assert {k: read[k] for k in values} == values
    Settings.from_env(read)


def test_the_example_reads_back_as_the_defaults_with_every_secret_empty() -> None:
    read = parsed(render_env_file())
    assert read == {s.name: s.default or "" for s in SETTINGS}
    for setting in SETTINGS:
        if setting.secret:
            assert read[setting.name] == "", setting.name


def test_given_values_replace_the_defaults_and_other_names_are_left_out() -> None:
    values = {**new_env_values(), "MLFLOW_STACK_PORT": "5050", "NOT_A_SETTING": "x"}
    read = parsed(render_env_file(values))
    assert "NOT_A_SETTING" not in read
    for setting in SETTINGS:
        assert read[setting.name] == values.get(setting.name, setting.default or "")
    assert read["MLFLOW_STACK_PORT"] == "5050"


def test_each_section_is_introduced_once_in_the_contracts_order() -> None:
    text = render_env_file()
    titles = [line[6:-4] for line in text.splitlines() if line.startswith("# --- ")]
    used = list(dict.fromkeys(setting.section for setting in SETTINGS))
    assert titles == [SECTIONS[section] for section in used]


def test_a_required_setting_says_so_above_its_line() -> None:
    lines = render_env_file().splitlines()
    for setting in SETTINGS:
        at = lines.index(f"{setting.name}={setting.default or ''}")
        comment = []
        for line in reversed(lines[:at]):
            if not line.startswith("# ") or line.startswith("# --- "):
                break
            comment.insert(0, line[2:])
        said = " ".join(comment)
        assert said.startswith(setting.doc.split()[0])
        assert said.endswith(" Required.") == setting.required, setting.name


def test_the_example_begins_with_how_to_use_it() -> None:
    text = render_env_file()
    assert text.startswith("# mlflow-stack settings. Copy to .env")
    assert text.endswith("\n") and not text.endswith("\n\n")


# --- render_reference ---


def test_every_setting_has_exactly_one_row_of_six_cells() -> None:
    text = render_reference()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(SETTINGS)
    for setting in SETTINGS:
        assert len(row_of(text, setting.name)) == len(cells(HEADER))


def test_every_table_line_has_as_many_cells_as_its_header() -> None:
    width = len(cells(HEADER))
    for line in render_reference().splitlines():
        if line.startswith("|"):
            assert len(cells(line)) == width, line


def test_one_table_per_section_in_the_contracts_order() -> None:
    lines = render_reference().splitlines()
    used = list(dict.fromkeys(setting.section for setting in SETTINGS))
    assert [line[3:] for line in lines if line.startswith("## ")] == [
        SECTIONS[section] for section in used
    ]
    assert lines.count(HEADER) == len(used)
    for at, line in enumerate(lines):
        if line.startswith("## "):
            assert lines[at + 2 : at + 4] == [HEADER, "| --- | --- | --- | --- | --- | --- |"]


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "*required* (generated)"),
        ("POSTGRES_PASSWORD", "*empty* (generated)"),
        ("POSTGRES_PASSWORD_FILE", "*empty*"),
        ("MLFLOW_STACK_S3_ENDPOINT_URL", "*empty*"),
        ("MLFLOW_STACK_S3_ACCESS_KEY", "*empty* (generated)"),
        ("MLFLOW_STACK_PORT", "`5000`"),
    ],
)
def test_the_default_cell_tells_required_empty_generated_and_given(name: str, default: str) -> None:
    assert row_of(render_reference(), name)[1] == default


def test_each_row_shows_the_check_the_secrecy_and_the_doc() -> None:
    text = render_reference()
    for setting in SETTINGS:
        variable, _, check, secret, _, meaning = row_of(text, setting.name)
        assert variable == f"`{setting.name}`"
        assert check == setting.parse.__doc__
        assert secret == ("yes" if setting.secret else "no")
        assert meaning == setting.doc.replace("|", "\\|")


def test_the_runtimes_cell_names_what_each_runtime_sets_itself() -> None:
    text = render_reference()
    for setting in SETTINGS:
        runtimes = row_of(text, setting.name)[4].split("<br>")
        assert [cell.split(":")[0] for cell in runtimes] == list(RUNTIMES)
        for runtime, cell in zip(RUNTIMES, runtimes, strict=True):
            fixed = setting.fixed_by.get(runtime)
            if fixed:
                assert cell == f"{runtime}: *set* ({fixed})"
            else:
                assert "*set*" not in cell
    password = row_of(text, "POSTGRES_PASSWORD")[4]
    assert "ec2: *set* (empty: POSTGRES_PASSWORD_SECRET_ARN)" in password
    assert "native: `.env`" in password
    arn = row_of(text, "POSTGRES_PASSWORD_SECRET_ARN")[4]
    assert "ec2: *set* (the database secret Terraform creates)" in arn


def test_pipes_and_line_breaks_cannot_break_a_row(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = Setting(
        "ODD_SETTING",
        "a doc with a | pipe\nand a line break",
        "server",
        default="a|b",
        parse=checks.choice("a|b", "c"),
        fixed_by={"compose": "x | y"},
    )
    required = Setting("NEEDED", "must be given", "auth", parse=checks.text)
    monkeypatch.setattr(render, "SETTINGS", (odd, required))

    text = render_reference()

    row = row_of(text, "ODD_SETTING")
    assert len(row) == len(cells(HEADER))
    assert row[1] == "`a\\|b`"
    assert row[2] == "one of a\\|b, c"
    assert "compose: *set* (x \\| y)" in row[4]
    assert row[5] == "a doc with a \\| pipe and a line break"
    assert row_of(text, "NEEDED")[1] == "*required*"  # not generated
    assert [line for line in text.splitlines() if line.startswith("## ")] == [
        f"## {SECTIONS['server']}",
        f"## {SECTIONS['auth']}",
    ]
