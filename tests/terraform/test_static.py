"""The Terraform configuration, checked without any AWS: formatting, validity of the root and of
every module, the modules' shape (typed and described variables, README), and checkov."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from mlflow_stack.settings.contract import SETTINGS
from tests.conftest import which_or_fail
from tests.terraform.conftest import (
    MODULES,
    REPO,
    TERRAFORM_SRC,
    SharedProvider,
    Terraform,
    TerraformFactory,
)

CHECKOV = REPO / ".venv" / "checkov" / "bin" / "checkov"
_BLOCK = re.compile(r'^(variable|output) "([^"]+)" \{$', re.MULTILINE)


def _closing_brace(text: str, opening: int) -> int:
    depth = 0
    for index in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return index
    raise ValueError(f"unbalanced braces after offset {opening}")


def blocks(path: Path) -> dict[str, str]:
    """The body of each top-level variable or output block of a file (by brace counting)."""
    text = path.read_text()
    return {
        f"{match[1]}.{match[2]}": text[match.end() : _closing_brace(text, match.end() - 1)]
        for match in _BLOCK.finditer(text)
    }


def test_terraform_fmt_is_clean(tf_factory: TerraformFactory) -> None:
    terraform = Terraform(tf_factory.binary, TERRAFORM_SRC, tf_factory.environment(tf_factory.root))
    result = terraform.run("fmt", "-check", "-recursive", "-diff", "-no-color", check=False)
    assert result.returncode == 0, f"run `terraform fmt -recursive terraform`:\n{result.stdout}"


def test_root_configuration_is_valid(tf_root: Terraform, shared_provider: SharedProvider) -> None:
    result = tf_root.sharing(shared_provider).run("validate", "-no-color")
    assert "Success! The configuration is valid." in result.stdout


@pytest.mark.parametrize("module", MODULES)
def test_module_is_valid_on_its_own(
    tf_factory: TerraformFactory, tf_root: Terraform, shared_provider: SharedProvider, module: str
) -> None:
    terraform = tf_factory.in_existing(tf_root, f"modules/{module}")
    terraform.init()
    result = terraform.sharing(shared_provider).run("validate", "-no-color")
    assert "Success! The configuration is valid." in result.stdout


@pytest.mark.parametrize("module", MODULES)
def test_module_has_the_standard_layout(module: str) -> None:
    directory = TERRAFORM_SRC / "modules" / module
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
        assert (directory / name).is_file(), f"modules/{module}/{name} is missing"
    versions = (directory / "versions.tf").read_text()
    assert 'source  = "hashicorp/aws"' in versions
    assert 'version = ">= 5.100, < 6.0"' in versions


@pytest.mark.parametrize(
    "path",
    sorted(
        p.relative_to(TERRAFORM_SRC)
        for p in [
            *TERRAFORM_SRC.glob("variables.tf"),
            *TERRAFORM_SRC.glob("modules/*/variables.tf"),
        ]
    ),
    ids=str,
)
def test_every_variable_is_typed_and_described(path: Path) -> None:
    variables = blocks(TERRAFORM_SRC / path)
    assert variables
    for name, body in variables.items():
        assert re.search(r"^  type\s+=", body, re.MULTILINE), f"{path}: {name} has no type"
        assert re.search(r'^  description\s+= "[^"]{10,}', body, re.MULTILINE), (
            f"{path}: {name} has no description"
        )


@pytest.mark.parametrize(
    "path",
    sorted(
        p.relative_to(TERRAFORM_SRC)
        for p in [*TERRAFORM_SRC.glob("outputs.tf"), *TERRAFORM_SRC.glob("modules/*/outputs.tf")]
    ),
    ids=str,
)
def test_every_output_is_described(path: Path) -> None:
    outputs = blocks(TERRAFORM_SRC / path)
    assert outputs
    for name, body in outputs.items():
        assert re.search(r'^  description\s+= "[^"]{10,}', body, re.MULTILINE), (
            f"{path}: {name} has no description"
        )


def test_example_variables_name_only_root_variables() -> None:
    declared = {name.split(".", 1)[1] for name in blocks(TERRAFORM_SRC / "variables.tf")}
    example = (TERRAFORM_SRC / "terraform.tfvars.example").read_text()
    assigned = set(re.findall(r"^#?\s*([a-z_0-9]+)\s+=", example, re.MULTILINE))
    assert "allowed_cidrs" in assigned
    assert assigned <= declared, assigned - declared


def test_the_production_example_runs_a_standby_database() -> None:
    """terraform.tfvars.example is the production example: Multi-AZ on (the variable's default
    is off, for throwaway stacks), and no plain HTTP."""
    example = (TERRAFORM_SRC / "terraform.tfvars.example").read_text()
    assert re.search(r"^db_multi_az\s+= true$", example, re.MULTILINE)
    assert not re.search(r"^allow_plain_http\s+= true", example, re.MULTILINE)


def test_no_literal_password_in_the_configuration() -> None:
    literal = re.compile(r'^\s*(password|secret_string)\s*=\s*"', re.MULTILINE)
    for path in TERRAFORM_SRC.rglob("*.tf"):
        assert not literal.search(path.read_text()), f"{path} sets a password literally"


def test_server_setting_defaults_equal_the_settings_module() -> None:
    """The settings a user may override on AWS start from the same defaults as .env.example."""
    text = (TERRAFORM_SRC / "modules" / "server" / "main.tf").read_text()
    block = re.search(r"^  setting_defaults = \{\n(.*?)\n  \}$", text, re.MULTILINE | re.DOTALL)
    assert block, "local.setting_defaults not found in modules/server/main.tf"
    defaults = dict(re.findall(r'^ +([A-Z0-9_]+) += "([^"]*)"$', block[1], re.MULTILINE))
    assert defaults
    expected = {setting.name: setting.default for setting in SETTINGS}
    for name, value in defaults.items():
        assert name in expected, f"{name} is not a setting"
        assert value == expected[name], f"{name}: {value!r} here, {expected[name]!r} in settings.py"


def test_checkov_finds_no_failed_check(tf_factory: TerraformFactory) -> None:
    if not CHECKOV.is_file():
        pytest.fail(f"{CHECKOV} is missing: run `make install`")
    scanned = tf_factory.copy("checkov")
    result = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(scanned.workdir),
            "--framework",
            "terraform",
            "--skip-download",  # offline: no policies or guidelines from Prisma Cloud
            "--quiet",
            "--output",
            "json",
        ],
        cwd=scanned.workdir,
        env=scanned.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    results = report.get("results", {})
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']})"
        for c in results.get("failed_checks", [])
    ]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert report["summary"]["passed"] > 100, report["summary"]
    for check in results.get("skipped_checks", []):
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 30, (
            f"{check['check_id']} on {check['resource']} needs a written reason"
        )


def test_provider_lock_file_is_committed_and_names_every_platform() -> None:
    """The lock file pins the provider the tests run (every `terraform init` of a copy here
    uses -lockfile=readonly, so the mirror's package must match its h1 hash) and carries the
    registry's zh hashes of every platform, so users on macOS or arm64 verify theirs too."""
    lock = TERRAFORM_SRC / ".terraform.lock.hcl"
    tracked = subprocess.run(
        [which_or_fail("git"), "ls-files", "--error-unmatch", str(lock)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tracked.returncode == 0, "terraform/.terraform.lock.hcl is not committed"
    text = lock.read_text()
    assert 'provider "registry.terraform.io/hashicorp/aws" {' in text
    assert 'version     = "5.100.0"' in text
    assert len(re.findall(r'"zh:[0-9a-f]{64}"', text)) >= 10
    assert re.search(r'"h1:[A-Za-z0-9+/]{43}="', text)
