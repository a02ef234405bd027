"""terraform/scripts/push-image.sh, the step between `terraform apply` and running servers, run
with terraform, aws and docker stubbed: which image it builds for which platform and where it
pushes it, that it leaves an existing (immutable) tag alone, and how it fails."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import which_or_fail
from tests.terraform.conftest import REPO, write_stubs

SCRIPT = REPO / "terraform" / "scripts" / "push-image.sh"
REPOSITORY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlflow/mlflow-server"

STUB = """\
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["STUB_CALLS"], "a") as log:
    log.write(name + " " + " ".join(sys.argv[1:]) + "\\n")
if name == "terraform":
    outputs = json.loads(os.environ["STUB_OUTPUTS"])
    key = sys.argv[-1]
    if key not in outputs:
        sys.exit(1)
    print(outputs[key], end="")
elif name == "aws" and sys.argv[1:3] == ["ecr", "describe-images"]:
    sys.exit(0 if os.environ.get("STUB_IMAGE_EXISTS") else 254)
elif name == "aws" and sys.argv[1:3] == ["ecr", "get-login-password"]:
    print("token")
elif name == "docker" and sys.argv[1:2] == ["login"]:
    sys.stdin.read()
"""


def run(
    tmp_path: Path, outputs: dict[str, str], exists: bool = False, *args: str
) -> tuple[int, str, str]:
    stubs = write_stubs(tmp_path / "bin", dict.fromkeys(("terraform", "aws", "docker"), STUB))
    calls = tmp_path / "calls.log"
    calls.write_text("")
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "STUB_CALLS": str(calls),
        "STUB_OUTPUTS": json.dumps(outputs),
        **({"STUB_IMAGE_EXISTS": "1"} if exists else {}),
    }
    result = subprocess.run(
        ["/bin/bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr, calls.read_text()


def outputs(architecture: str = "x86_64") -> dict[str, str]:
    return {
        "ecr_repository_url": REPOSITORY,
        "image": f"{REPOSITORY}:0.2.0",
        "region": "eu-west-1",
        "architecture": architecture,
    }


def test_script_passes_shellcheck() -> None:
    result = subprocess.run(
        [which_or_fail("shellcheck"), str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(("architecture", "platform"), [("x86_64", "linux/amd64"),
                                                        ("arm64", "linux/arm64")])  # fmt: skip
def test_builds_the_stacks_tag_for_its_platform_and_pushes_it(
    tmp_path: Path, architecture: str, platform: str
) -> None:
    code, output, calls = run(tmp_path, outputs(architecture))
    assert code == 0, output
    docker = [line for line in calls.splitlines() if line.startswith("docker ")]
    registry = REPOSITORY.split("/", 1)[0]
    assert docker == [
        f"docker login --username AWS --password-stdin {registry}",
        f"docker build --platform {platform} --file {REPO}/mlflow-server/Dockerfile "
        f"--tag {REPOSITORY}:0.2.0 {REPO}",
        f"docker push {REPOSITORY}:0.2.0",
    ]
    assert "aws ecr get-login-password --region eu-west-1" in calls
    assert f"pushed {REPOSITORY}:0.2.0" in output


def test_leaves_a_tag_that_is_already_pushed_alone(tmp_path: Path) -> None:
    code, output, calls = run(tmp_path, outputs(), exists=True)
    assert code == 0, output
    assert "--repository-name mlflow/mlflow-server --image-ids imageTag=0.2.0" in calls
    assert "docker" not in calls
    assert "already in the repository" in output


def test_fails_clearly_without_a_deployed_stack(tmp_path: Path) -> None:
    code, output, calls = run(tmp_path, {})
    assert code == 1
    assert output.strip().splitlines()[-1].startswith("push-image: no output 'image' in ")
    assert "docker" not in calls


def test_fails_clearly_for_a_stack_that_runs_an_image_of_its_own(tmp_path: Path) -> None:
    own = {name: value for name, value in outputs().items() if name != "ecr_repository_url"}
    code, output, _ = run(tmp_path, own)  # a null output is not in the state
    assert code == 1
    assert "runs an image of your own" in output


def test_pushes_a_new_tag_before_the_upgrade(tmp_path: Path) -> None:
    """An upgrade pushes the new tag first, then applies it: the servers never wait on it."""
    code, output, calls = run(tmp_path, outputs(), False, "0.3.0")
    assert code == 0, output
    assert f"docker push {REPOSITORY}:0.3.0" in calls
    assert ":0.2.0" not in calls


def test_refuses_a_tag_docker_would_refuse(tmp_path: Path) -> None:
    code, output, calls = run(tmp_path, outputs(), False, "../0.3.0")
    assert code == 1
    assert "'../0.3.0' is not a Docker tag" in output
    assert "docker" not in calls
