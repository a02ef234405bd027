"""`terraform test` (terraform/tests/*.tftest.hcl): the plans of every module with a mocked AWS
provider, and of the root configuration as a whole (stack.tftest.hcl), whose ephemeral
passwords need a real provider: it talks to a moto server started here, which only generates
them (every other value is overridden in the file). The files run concurrently; each must
report all its runs passed."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.terraform.conftest import (
    MODULES,
    TERRAFORM_SRC,
    Running,
    SharedProvider,
    Terraform,
    start_moto,
    stop_moto,
)

TEST_FILES = sorted(p.name for p in (TERRAFORM_SRC / "tests").glob("*.tftest.hcl"))
#: Test files whose provider is real and pointed at moto (moto_url).
NEEDS_MOTO = {"stack.tftest.hcl"}
_RUN_BLOCK = re.compile(r'^run "([^"]+)" \{$', re.MULTILINE)
_SUMMARY = re.compile(r"^Success! (\d+) passed, 0 failed\.$", re.MULTILINE)


def run_names(name: str) -> list[str]:
    return _RUN_BLOCK.findall((TERRAFORM_SRC / "tests" / name).read_text())


@pytest.fixture(scope="module")
def terraform_test_runs(
    tf_root: Terraform, shared_provider: SharedProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Running]]:
    """Every test file started at once (they share the initialised root, and only read it).
    They share one provider process: the mocked files never configure it, and
    stack.tftest.hcl's runs, one after another, configure it alike (for moto)."""
    logs = tmp_path_factory.mktemp("terraform-test")
    moto = start_moto(tmp_path_factory.mktemp("moto-passwords"))
    moto_vars = logs / "moto.tfvars"
    moto_vars.write_text(f'moto_url = "{moto.url}"\n')
    running = {
        name: tf_root.sharing(shared_provider).start(
            "test",
            "-no-color",
            f"-filter=tests/{name}",
            *([f"-var-file={moto_vars}"] if name in NEEDS_MOTO else []),
            log=logs / f"{name}.log",
        )
        for name in TEST_FILES
    }
    try:
        yield running
    finally:
        for run in running.values():
            run.stop()
        stop_moto(moto)


def test_every_module_has_a_test_file() -> None:
    assert {f"{module}.tftest.hcl" for module in MODULES} <= set(TEST_FILES)


@pytest.mark.parametrize("name", TEST_FILES)
def test_terraform_test_file_passes(terraform_test_runs: dict[str, Running], name: str) -> None:
    returncode, output, _ = terraform_test_runs[name].wait(timeout=600)
    runs = run_names(name)
    assert returncode == 0, output
    summary = _SUMMARY.search(output)
    assert summary, output
    # Every run block ran and passed: none skipped, none missing.
    assert int(summary[1]) == len(runs), output
    for run in runs:
        assert f'run "{run}"... pass' in output, output
