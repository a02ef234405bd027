"""The Terraform tests' session fixtures, registered by tests/conftest.py so that every test
folder shares one instance of each: the compose tests boot the image the way the EC2 user data
of the emulator's deployment does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.terraform.conftest import (
    PROVIDER_MIRROR,
    MotoServer,
    TerraformFactory,
    find_tool,
    missing,
    start_moto,
    stop_moto,
)

#: The session's Emulation once the fixture made it (tests/conftest.py starts its destroy).
STARTED: list[Any] = []


@pytest.fixture(scope="session")
def terraform_bin() -> str:
    binary = find_tool("terraform")
    if not (PROVIDER_MIRROR / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        missing(
            f"terraform's provider mirror {PROVIDER_MIRROR} has no hashicorp/aws "
            "(set TERRAFORM_PROVIDER_MIRROR to a filesystem mirror)"
        )
    return binary


@pytest.fixture(scope="session")
def tf_factory(terraform_bin: str, tmp_path_factory: pytest.TempPathFactory) -> TerraformFactory:
    return TerraformFactory(terraform_bin, tmp_path_factory.mktemp("terraform"))


@pytest.fixture(scope="session")
def moto_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[MotoServer]]:
    """Two moto servers, one per deployment (moto holds only one aws_db_instance per server)."""
    servers: list[MotoServer] = []
    try:
        for _ in range(2):
            servers.append(start_moto(tmp_path_factory.mktemp("moto")))
        yield servers
    finally:
        for server in servers:
            stop_moto(server)


@pytest.fixture(scope="session")
def emulation(tf_factory: TerraformFactory, moto_servers: list[MotoServer]) -> Iterator[Any]:
    from tests.terraform.conftest import find_tool
    from tests.terraform.emulator import Emulation

    find_tool("aws")  # apply runs terraform/scripts/roll-out.sh, which calls the AWS CLI
    started = Emulation(tf_factory, moto_servers)
    STARTED.append(started)
    try:
        yield started
    finally:
        started.cleanup()
        STARTED.clear()
