"""terraform/scripts/roll-out.sh, which `terraform apply` runs for every new launch template
version, with the AWS CLI stubbed to play an instance refresh's course: it starts the refresh
with the version as the desired configuration and auto rollback, waits for its end, and fails
the apply in one line when the refresh rolls back, fails, is refused or outlasts the timeout.
(The moto apply runs it with the real AWS CLI against the emulator's refresh, which always
succeeds: tests/terraform/test_apply_moto.py.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.terraform.conftest import REPO, shellcheck, write_stubs

SCRIPT = REPO / "terraform" / "scripts" / "roll-out.sh"

#: The AWS CLI, as far as the script uses it: the group's saved version, a refresh started (or
#: refused), then one status per DescribeInstanceRefreshes call.
STUB = """\
import json, os, sys
state = json.loads(open(os.environ["STUB_STATE"]).read())
with open(os.environ["STUB_CALLS"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
command = sys.argv[1:3]
if command == ["autoscaling", "describe-auto-scaling-groups"]:
    print(state["saved"])
elif command == ["autoscaling", "start-instance-refresh"]:
    if state.get("start_error"):
        print(state["start_error"], file=sys.stderr)
        sys.exit(254)
    print("refresh-1")
elif command == ["autoscaling", "describe-instance-refreshes"]:
    seen = state.setdefault("seen", 0)
    statuses = state["statuses"]
    print("\\t".join(str(field) for field in statuses[min(seen, len(statuses) - 1)]))
    state["seen"] = seen + 1
    open(os.environ["STUB_STATE"], "w").write(json.dumps(state))
else:
    sys.exit(255)
"""

ENVIRONMENT = {
    "GROUP": "mlflow-server",
    "REGION": "eu-west-1",
    "LAUNCH_TEMPLATE_ID": "lt-0123456789abcdef0",
    "VERSION": "3",
    "DESIRED_CONFIGURATION": json.dumps(
        {"LaunchTemplate": {"LaunchTemplateId": "lt-0123456789abcdef0", "Version": "3"}}
    ),
    "PREFERENCES": json.dumps(
        {
            "AutoRollback": True,
            "AlarmSpecification": {"Alarms": ["mlflow-rollout-target-5xx"]},
        }
    ),
    "TIMEOUT_SECONDS": "60",
    "POLL_SECONDS": "0",
}


def run(
    tmp_path: Path, state: dict[str, Any], **overrides: str
) -> tuple[int, str, list[list[str]]]:
    stubs = write_stubs(tmp_path / "bin", {"aws": STUB})
    calls = tmp_path / "calls.log"
    calls.write_text("")
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(state))
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "STUB_CALLS": str(calls),
        "STUB_STATE": str(state_file),
        **ENVIRONMENT,
        **overrides,
    }
    result = subprocess.run(
        ["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    logged = [json.loads(line) for line in calls.read_text().splitlines()]
    return result.returncode, result.stdout + result.stderr, logged


def test_script_passes_shellcheck() -> None:
    result = shellcheck(SCRIPT)
    assert result.returncode == 0, result.stdout


def test_a_group_already_on_the_version_is_left_alone(tmp_path: Path) -> None:
    """The first apply creates the group on the latest version: nothing to roll."""
    code, output, calls = run(tmp_path, {"saved": "3", "statuses": []})
    assert code == 0, output
    assert "already runs launch template version 3" in output
    assert [call[:2] for call in calls] == [["autoscaling", "describe-auto-scaling-groups"]]


def test_a_refresh_starts_with_the_version_and_auto_rollback_and_is_waited_for(
    tmp_path: Path,
) -> None:
    code, output, calls = run(
        tmp_path,
        {
            "saved": "2",
            "statuses": [
                ["Pending", 0, "None"],
                ["InProgress", 50, "None"],
                ["Successful", 100, "None"],
            ],
        },
    )
    assert code == 0, output
    assert "launch template version 2 -> 3" in output
    assert output.rstrip().endswith("roll-out: mlflow-server runs launch template version 3")
    (start,) = [call for call in calls if call[1] == "start-instance-refresh"]
    options = dict(zip(start[2::2], start[3::2], strict=False))
    assert options["--auto-scaling-group-name"] == "mlflow-server"
    assert options["--region"] == "eu-west-1"
    assert json.loads(options["--desired-configuration"])["LaunchTemplate"]["Version"] == "3"
    assert json.loads(options["--preferences"])["AutoRollback"] is True
    follows = [call for call in calls if call[1] == "describe-instance-refreshes"]
    assert len(follows) == 3
    assert all(call[call.index("--instance-refresh-ids") + 1] == "refresh-1" for call in follows)


def test_a_rolled_back_refresh_fails_the_apply_in_one_line_with_awss_reason(
    tmp_path: Path,
) -> None:
    reason = (
        "Instance refresh failed: an alarm went into ALARM state (mlflow-rollout-unhealthy-hosts)"
    )
    code, output, _ = run(
        tmp_path,
        {
            "saved": "2",
            "statuses": [["InProgress", 50, "None"], ["RollbackSuccessful", 100, reason]],
        },
    )
    assert code == 1
    (error,) = [line for line in output.splitlines() if "did not become healthy" in line]
    assert error.startswith("roll-out: the new servers (launch template version 3)")
    assert "the servers run version 2 again" in error and reason in error


def test_a_failed_refresh_says_so(tmp_path: Path) -> None:
    code, output, _ = run(
        tmp_path, {"saved": "2", "statuses": [["Failed", 40, "No instances launched"]]}
    )
    assert code == 1
    assert "ended Failed: No instances launched" in output


def test_a_refresh_already_in_progress_is_named(tmp_path: Path) -> None:
    code, output, calls = run(
        tmp_path,
        {
            "saved": "2",
            "statuses": [],
            "start_error": "An error occurred (InstanceRefreshInProgress) when calling the "
            "StartInstanceRefresh operation: An Instance Refresh is already in progress",
        },
    )
    assert code == 1
    assert "another instance refresh of mlflow-server is in progress" in output
    assert not [call for call in calls if call[1] == "describe-instance-refreshes"]


def test_the_wait_ends_at_the_timeout_and_says_the_refresh_goes_on(tmp_path: Path) -> None:
    code, output, _ = run(
        tmp_path,
        {"saved": "2", "statuses": [["InProgress", 10, "None"]]},
        TIMEOUT_SECONDS="1",
        POLL_SECONDS="0.2",
    )
    assert code == 1
    assert "is still InProgress (10 % done) after 1 s; it goes on without Terraform" in output


def test_without_the_aws_cli_it_says_what_is_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(
        ["/bin/bash", str(SCRIPT)], env={"PATH": f"{empty}:/usr/bin:/bin", **ENVIRONMENT},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "needs the AWS CLI on the machine that runs terraform apply" in result.stderr
