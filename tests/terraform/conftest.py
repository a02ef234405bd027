"""Fixtures for the Terraform tests: a private copy of terraform/ per purpose, Terraform run with
its own CLI configuration (the local provider mirror, no registry) and data dirs in temp dirs,
and moto servers on loopback for the apply test. Nothing is written into the repository."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_SRC = REPO / "terraform"
MODULES = ("network", "database", "artifacts", "server", "alarms", "access_logs")
#: The local provider mirror (hashicorp/aws only); nothing is fetched from a registry.
PROVIDER_MIRROR = Path(os.environ.get("TERRAFORM_PROVIDER_MIRROR", "/opt/tf-plugins"))

CLI_CONFIG = f"""\
provider_installation {{
  filesystem_mirror {{
    path    = "{PROVIDER_MIRROR}"
    include = ["registry.terraform.io/hashicorp/aws"]
  }}
  direct {{
    exclude = ["registry.terraform.io/hashicorp/*"]
  }}
}}
"""

#: Environment variables that could point Terraform or boto3 at a real account.
_SCRUBBED_PREFIXES = ("AWS_", "TF_")


def missing(message: str) -> NoReturn:
    """A missing tool fails the test in CI (which always has them) and skips it elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def find_tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        missing(f"{name} is not installed (needed by the Terraform tests)")
    return found


def fake_aws_environment() -> dict[str, str]:
    """Dummy credentials, so nothing can reach a real account even by mistake."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@dataclass
class Running:
    """A Terraform process started in the background."""

    process: subprocess.Popen[bytes]
    log: Path
    started: float

    def wait(self, timeout: float) -> tuple[int, str, float]:
        """Exit code, output and wall time in seconds (the process is killed on timeout)."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.process.returncode, self.log.read_text(), time.monotonic() - self.started

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Terraform:
    """Terraform run in one working directory with its own data dir."""

    binary: str
    workdir: Path
    env: dict[str, str]

    def run(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"terraform {' '.join(args)} failed in {self.workdir} "
                f"(exit {result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
            )
        return result

    def sharing(self, provider: SharedProvider) -> Terraform:
        """The same Terraform, using ``provider``'s running process instead of starting one."""
        return replace(self, env={**self.env, "TF_REATTACH_PROVIDERS": provider.reattach})

    def start(self, *args: str, log: Path) -> Running:
        """Start Terraform in the background; its output goes to a file (a pipe that nobody
        reads while another process is awaited would fill up and stall it)."""
        with log.open("w") as out:
            process = subprocess.Popen(
                [self.binary, *args],
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return Running(process, log, time.monotonic())

    def init(self) -> None:
        # The committed lock file must already name the provider and a hash of the package the
        # mirror holds (-lockfile=readonly): what users install is what the tests ran.
        locked = (self.workdir / ".terraform.lock.hcl").is_file()
        args = ("-lockfile=readonly",) if locked else ()
        self.run("init", "-input=false", "-no-color", *args, timeout=180)


class TerraformFactory:
    """Copies of terraform/ under one temp root, sharing a provider cache."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        (root / "cli.tfrc").write_text(CLI_CONFIG)
        (root / "plugin-cache").mkdir()

    def environment(self, data_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
        env.update(fake_aws_environment())
        env.update(
            TF_CLI_CONFIG_FILE=str(self.root / "cli.tfrc"),
            TF_DATA_DIR=str(data_dir),
            TF_PLUGIN_CACHE_DIR=str(self.root / "plugin-cache"),
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",  # no version check against checkpoint-api.hashicorp.com
        )
        return env

    def copy(self, name: str, subdir: str = "") -> Terraform:
        """A fresh copy of terraform/ (without local state or data dirs); Terraform in subdir."""
        target = self.root / name
        shutil.copytree(
            TERRAFORM_SRC,
            target,
            ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"),
        )
        data_dir = self.root / f"{name}-data" / (subdir or "root")
        data_dir.mkdir(parents=True)
        return Terraform(self.binary, target / subdir, self.environment(data_dir))

    def in_existing(self, copy: Terraform, subdir: str) -> Terraform:
        """Terraform in a subdirectory (a module) of an existing copy, with its own data dir."""
        data_dir = self.root / f"{copy.workdir.name}-data" / subdir.replace("/", "-")
        data_dir.mkdir(parents=True)
        return Terraform(self.binary, copy.workdir / subdir, self.environment(data_dir))


@pytest.fixture(scope="session")
def tf_root(tf_factory: TerraformFactory) -> Terraform:
    """An initialised copy of the root configuration (also installs the test files' modules)."""
    terraform = tf_factory.copy("static")
    terraform.init()
    return terraform


# --- shell scripts: shellcheck, and stubbed commands on PATH ---


def shellcheck(script: Path) -> subprocess.CompletedProcess[str]:
    """shellcheck of a bash script (following sourced files); its findings are in stdout."""
    from tests.conftest import which_or_fail

    return subprocess.run(
        [which_or_fail("shellcheck"), "--shell=bash", "--external-sources", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )


def write_stubs(directory: Path, stubs: dict[str, str], interpreter: str = sys.executable) -> Path:
    """Executable Python stand-ins for commands, named as the commands, in ``directory``; put
    it first on PATH."""
    directory.mkdir(exist_ok=True)
    for name, body in stubs.items():
        stub = directory / name
        stub.write_text(f"#!{interpreter}\n{body}")
        stub.chmod(0o755)
    return directory


# --- one AWS provider process for the plans that never configure it ---

_REATTACH = re.compile(r"TF_REATTACH_PROVIDERS='(\{.*\})'")


@dataclass
class SharedProvider:
    """The mirror's AWS provider, started once in Terraform's provider-debug mode
    (``-debug``), which Terraform reaches through ``TF_REATTACH_PROVIDERS`` instead of
    starting the 675 MB binary itself, two or three times per command and per run block of
    a test file: ``terraform test`` of database.tftest.hcl took 27 s of CPU that way and 6 s
    with it. The binary is the one ``init`` installs (the mirror's, checked against the lock
    file). A provider process holds one configuration at a time, so it serves only commands
    that do not overlap or configure it alike (or not at all): validate, the test files with a
    mocked provider, and stack.tftest.hcl's runs (all configured for the same moto) share
    one; each of the emulator's two deployments (applied at once, each configured for its own
    moto) has one of its own."""

    process: subprocess.Popen[bytes]
    reattach: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def provider_binary() -> Path:
    """The mirror's AWS provider at the version the lock file names."""
    lock = (TERRAFORM_SRC / ".terraform.lock.hcl").read_text()
    match = re.search(
        r'provider "registry.terraform.io/hashicorp/aws" \{\s*version\s*=\s*"([^"]+)"', lock
    )
    assert match, "the lock file names no hashicorp/aws version"
    found = sorted(
        (PROVIDER_MIRROR / "registry.terraform.io/hashicorp/aws" / match[1]).glob(
            "*/terraform-provider-aws_*"
        )
    )
    if not found:
        missing(f"the AWS provider {match[1]} is not in the mirror {PROVIDER_MIRROR}")
    return found[0]


def start_shared_provider(log: Path) -> SharedProvider:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(fake_aws_environment())
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(provider_binary()), "-debug"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = _REATTACH.search(log.read_text(errors="replace"))
        if found:
            return SharedProvider(process, found[1])
        if process.poll() is not None:
            break
        time.sleep(0.1)
    SharedProvider(process, "").stop()
    pytest.fail(f"the AWS provider did not start in debug mode:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def shared_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedProvider]:
    provider = start_shared_provider(tmp_path_factory.mktemp("aws-provider") / "provider.log")
    try:
        yield provider
    finally:
        provider.stop()


# --- moto ---


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, service: str) -> object:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def start_moto(directory: Path, **extra_env: str) -> MotoServer:
    """moto on a free loopback port, with the emulator extensions of moto_launcher.py (instance
    refreshes, the RDS default CA, ...); ``extra_env`` sets the launcher's knobs."""
    port = _free_port()
    log = directory / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    # Without the managed policies, attaching AmazonSSMManagedInstanceCore answers 404. ACM
    # issues a DNS-validated certificate at once instead of after 60 s.
    env.update(
        fake_aws_environment(),
        MOTO_IAM_LOAD_MANAGED_POLICIES="true",
        MOTO_ACM_VALIDATION_WAIT="0",
        **extra_env,
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.terraform.moto_launcher", "-H", "127.0.0.1",
             "-p", str(port)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"moto_server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):  # noqa: S310 - loopback
                return MotoServer(url, process, log)
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    process.kill()
    pytest.fail(f"moto_server did not answer on {url} within 60 s:\n{log.read_text()}")


def stop_moto(server: MotoServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=15)


# --- the emulator deployments, applied in the background ---
# The session fixtures (terraform_bin, tf_factory, moto_servers, emulation) are in fixtures.py,
# registered by tests/conftest.py, so that the compose tests share the same deployments; the
# order of the session (applies first, destroy last) is planned there too.

_EMULATOR_TESTS = "test_apply_moto.py"


@pytest.fixture(scope="session", autouse=True)
def _start_the_emulator_early(request: pytest.FixtureRequest) -> None:
    """Start the emulator applies with the first Terraform test when emulator tests will run.
    A failure (or a missing tool) is not raised here: the emulator tests meet it themselves.
    Under xdist, only the worker that runs the emulator's tests starts it (tests/conftest.py)."""
    if hasattr(request.config, "workerinput"):
        return
    if any(item.path.name == _EMULATOR_TESTS for item in request.session.items):
        with contextlib.suppress(Exception, pytest.skip.Exception, pytest.fail.Exception):
            request.getfixturevalue("emulation")
