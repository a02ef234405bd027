"""The servers' boot script (terraform/modules/server/user_data.sh.tftpl), without AWS.

It is rendered exactly as Terraform renders it (`templatefile` in `terraform console`: no
provider, no network), then run with stubbed aws, curl, docker and journalctl (real bash, jq,
coreutils): `prepare` (systemd's ExecStartPre before every start), `ship-journal` (the journal
to CloudWatch Logs, every minute) and `units DIR` (the systemd units, which `install` writes into
/etc/systemd/system), checked by `systemd-analyze verify` in a root tree of stubs.

What it cannot prove: that systemd on Amazon Linux 2023 runs the units as written (there is no
systemd as PID 1 here: the retry on a failed ExecStartPre is asserted from the unit file and
systemd.service(5)), that the real aws CLI accepts these arguments, or that journalctl's JSON
on the instance looks like the stub's (the stub follows journalctl's documented format).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.settings.contract import SERVE_SETTING_NAMES, Settings
from tests.terraform.conftest import REPO, find_tool, shellcheck, write_stubs

TEMPLATE = REPO / "terraform" / "modules" / "server" / "user_data.sh.tftpl"

ACCOUNT = "123456789012"
REGION = "eu-west-1"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
IMAGE = f"{REGISTRY}/mlflow-prod/mlflow-server:0.2.0"
LOG_GROUP = "/mlflow-stack/mlflow-prod/server"
DB_SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-3f1c2a9e-1b2c-AbCdEf"
APP_SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:mlflow-prod/app-XyZ123"
SNAPSHOT = "mlflow-prod-before-0-2-0"
INSTANCE_ID = "i-0123456789abcdef0"
STREAM = f"{INSTANCE_ID}/journal"
ALB = "mlflow-prod-1234567890.eu-west-1.elb.amazonaws.com"

#: The env file as the server module passes it: every setting, the app secrets as shell
#: variables, and the database secret's ARN (the server reads the password from it whenever it
#: opens a connection, so that a rotation reaches running servers).
ENVIRONMENT = {
    "POSTGRES_HOST": "mlflow-prod.c9akciq32xyz.eu-west-1.rds.amazonaws.com",
    "POSTGRES_PORT": "5432",
    "POSTGRES_USER": "mlflow",
    "POSTGRES_PASSWORD": "",
    "POSTGRES_PASSWORD_FILE": "",
    "POSTGRES_PASSWORD_SECRET_ARN": "${DB_SECRET_ARN}",
    "POSTGRES_DB": "mlflow",
    "MLFLOW_STACK_AUTH_DB": "mlflow_auth",
    "POSTGRES_SSLMODE": "require",
    "MLFLOW_STACK_S3_BUCKET": f"mlflow-prod-artifacts-{ACCOUNT}",
    "MLFLOW_STACK_S3_ENDPOINT_URL": "",
    "MLFLOW_STACK_S3_ACCESS_KEY": "",
    "MLFLOW_STACK_S3_SECRET_KEY": "",
    "MLFLOW_STACK_S3_REGION": REGION,
    "MLFLOW_STACK_ARTIFACT_PRESIGNED_URLS": "false",
    "MLFLOW_STACK_HOST": "0.0.0.0",  # inside the container
    "MLFLOW_STACK_PORT": "5000",
    "MLFLOW_STACK_WORKERS": "2",
    "MLFLOW_STACK_ALLOWED_HOSTS": f"mlflow.example.com,{ALB}",
    "MLFLOW_STACK_TRUSTED_PROXIES": "10.20.0.0/16",
    "MLFLOW_STACK_WAIT_TIMEOUT": "60",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_STACK_GC_RETENTION_DAYS": "30",
    "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
    "MLFLOW_AUTH_ADMIN_PASSWORD": "${MLFLOW_AUTH_ADMIN_PASSWORD}",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "${MLFLOW_FLASK_SERVER_SECRET_KEY}",
    "MLFLOW_STACK_AUTH_DEFAULT_PERMISSION": "READ",
    "MLFLOW_STACK_AUTH_CACHE_TTL": "60",
    # basic auth: what Terraform sets for single sign-on stays empty
    "MLFLOW_STACK_AUTH_MODE": "basic",
    "MLFLOW_STACK_PUBLIC_URL": "",
    "MLFLOW_STACK_OIDC_ISSUER": "",
    "MLFLOW_STACK_OIDC_CLIENT_ID": "",
    "MLFLOW_STACK_OIDC_CLIENT_SECRET": "",
    "MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE": "",
    "MLFLOW_STACK_OIDC_SCOPES": "openid profile email",
    "MLFLOW_STACK_OIDC_USERNAME_CLAIM": "preferred_username",
    "MLFLOW_STACK_OIDC_GROUPS_CLAIM": "groups",
    "MLFLOW_STACK_OIDC_ADMIN_GROUPS": "",
    "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS": "",
    "MLFLOW_STACK_OIDC_AUDIENCE": "",
    "MLFLOW_STACK_OIDC_SESSION_TTL": "3600",
}

#: The env file with single sign-on (oidc_issuer set): the client secret, like the other app
#: secrets, is a shell variable that prepare fills from the app secret.
ISSUER = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0"
ENVIRONMENT_OIDC = {
    **ENVIRONMENT,
    "MLFLOW_STACK_AUTH_MODE": "oidc",
    "MLFLOW_STACK_PUBLIC_URL": "https://mlflow.example.com",
    "MLFLOW_STACK_OIDC_ISSUER": ISSUER,
    "MLFLOW_STACK_OIDC_CLIENT_ID": "11111111-1111-1111-1111-111111111111",
    "MLFLOW_STACK_OIDC_CLIENT_SECRET": "${MLFLOW_STACK_OIDC_CLIENT_SECRET}",
    "MLFLOW_STACK_OIDC_SCOPES": "openid profile email",
    "MLFLOW_STACK_OIDC_ADMIN_GROUPS": "ml-admins",
    "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS": "analysts=READ:NO_PERMISSIONS,ml-team=EDIT",
    "MLFLOW_STACK_OIDC_AUDIENCE": "api://11111111-1111-1111-1111-111111111111",
}

#: The template's variables: exactly what terraform/modules/server/main.tf passes.
VARIABLES: dict[str, Any] = {
    "environment": ENVIRONMENT,
    "region": REGION,
    "image": IMAGE,
    "registry": REGISTRY,
    "container_port": 5000,
    "log_group": LOG_GROUP,
    "db_secret_arn": DB_SECRET_ARN,
    "app_secret_arn": APP_SECRET_ARN,
    "secrets_version": 3,
    "database_snapshot": SNAPSHOT,
}

SECRETS = {
    DB_SECRET_ARN: {"username": "mlflow", "password": "Db0Password0From0Secrets0Manager0x"},
    APP_SECRET_ARN: {
        "MLFLOW_AUTH_ADMIN_PASSWORD": "Admin0Password0From0Secrets0Manager",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "Flask0Secret0Key0From0Secrets0Manager0",
    },
}
#: The app secret of a stack with single sign-on (an Entra ID secret has ~ and .).
CLIENT_SECRET = "Client0Secret~From.Secrets_Manager-0"
SECRETS_OIDC = {
    **SECRETS,
    APP_SECRET_ARN: {**SECRETS[APP_SECRET_ARN], "MLFLOW_STACK_OIDC_CLIENT_SECRET": CLIENT_SECRET},
}
ECR_TOKEN = "ecr-token-from-the-stub"
UNITS = (
    "mlflow-stack.service",
    "mlflow-stack-gc.service",
    "mlflow-stack-gc.timer",
    "mlflow-stack-journal.service",
    "mlflow-stack-journal.timer",
)
JOURNAL_UNITS = ("mlflow-stack.service", "mlflow-stack-gc.service", "cloud-final.service")

# --- rendering, as Terraform does ---


def render(tmp: Path, variable_sets: list[dict[str, Any]]) -> list[str]:
    """The template rendered by `terraform console`, once per set of variables (exact bytes:
    the results go through jsonencode)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "cli.tfrc").write_text("")
    renders = []
    for index, variables in enumerate(variable_sets):
        (tmp / f"vars{index}.json").write_text(json.dumps(variables))
        renders.append(f'templatefile("{TEMPLATE}", jsondecode(file("vars{index}.json")))')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    env.update(
        TF_CLI_CONFIG_FILE=str(tmp / "cli.tfrc"),
        TF_DATA_DIR=str(tmp / "data"),
        TF_IN_AUTOMATION="1",
        CHECKPOINT_DISABLE="1",
    )
    result = subprocess.run(
        [find_tool("terraform"), "console"],
        input=f"jsonencode([{', '.join(renders)}])\n",
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    scripts = json.loads(json.loads(result.stdout))
    assert len(scripts) == len(variable_sets)
    return [str(script) for script in scripts]


@dataclass(frozen=True)
class Rendered:
    script: str  # with a snapshot
    without_snapshot: str  # database_snapshot = ""
    oidc: str  # single sign-on


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    with_snapshot, without, oidc = render(
        tmp_path_factory.mktemp("render"),
        [
            VARIABLES,
            {**VARIABLES, "database_snapshot": ""},
            {**VARIABLES, "environment": ENVIRONMENT_OIDC},
        ],
    )
    return Rendered(with_snapshot, without, oidc)


def test_environment_names_every_setting() -> None:
    assert set(ENVIRONMENT) == SERVE_SETTING_NAMES
    assert set(ENVIRONMENT_OIDC) == SERVE_SETTING_NAMES


def test_template_uses_exactly_the_variables_the_module_passes() -> None:
    text = TEMPLATE.read_text()
    interpolated = set(re.findall(r"(?<!\$)\$\{\s*([a-z_]+)", text))
    directives = set(re.findall(r"(?<!%)%\{~?\s*(?:if|for [a-z_, ]+ in)\s+([a-z_]+)", text))
    assert (interpolated | directives) - {"name", "value"} == set(VARIABLES)


def test_rendered_script_names_the_snapshot_and_no_secret(rendered: Rendered) -> None:
    assert f"# Database snapshot taken before this image: {SNAPSHOT}\n" in rendered.script
    assert "# Database snapshot taken before this image: none\n" in rendered.without_snapshot
    assert rendered.script.startswith("#!/bin/bash\n")
    passwords = [SECRETS[DB_SECRET_ARN]["password"], *SECRETS_OIDC[APP_SECRET_ARN].values()]
    for password in passwords:
        assert password not in rendered.script
        assert password not in rendered.oidc
    # Only with single sign-on does prepare ask the app secret for the client secret.
    asks = 'MLFLOW_STACK_OIDC_CLIENT_SECRET=$(secret_value "$app" MLFLOW_STACK_OIDC_CLIENT_SECRET'
    assert asks in rendered.oidc
    assert asks not in rendered.script
    assert "MLFLOW_STACK_OIDC_CLIENT_SECRET=${MLFLOW_STACK_OIDC_CLIENT_SECRET}\n" in rendered.oidc
    assert "PUBLIC_HOSTNAME" not in rendered.script and "public-ipv4" not in rendered.script


def test_rendered_script_passes_shellcheck(rendered: Rendered, tmp_path: Path) -> None:
    for name, text in (
        ("snapshot.sh", rendered.script),
        ("none.sh", rendered.without_snapshot),
        ("oidc.sh", rendered.oidc),
    ):
        script = tmp_path / name
        script.write_text(text)
        result = shellcheck(script)
        assert result.returncode == 0, result.stdout


# --- running the script with stubs ---

STUB_AWS = """\
import json, os, sys
args = sys.argv[1:]
state = os.environ["STUB_STATE"]
def record(entry):
    with open(os.path.join(state, "aws.jsonl"), "a") as log:
        log.write(json.dumps(entry) + "\\n")
def option(name):
    return args[args.index(name) + 1]
def error(code, operation, message):
    sys.stderr.write(f"\\nAn error occurred ({code}) when calling the {operation} operation: "
                     f"{message}\\n")
    sys.exit(254)
if args[:2] == ["secretsmanager", "get-secret-value"]:
    record({"call": "get-secret-value", "args": args})
    secrets = json.load(open(os.path.join(state, "secrets.json")))
    if option("--secret-id") not in secrets:
        error("AccessDeniedException", "GetSecretValue", "User: arn:aws:sts::123456789012:"
              "assumed-role/mlflow-prod-server/i-0123456789abcdef0 is not authorized to "
              "perform: secretsmanager:GetSecretValue")
    print(json.dumps(secrets[option("--secret-id")]))
elif args[:2] == ["ecr", "get-login-password"]:
    record({"call": "get-login-password", "args": args})
    if os.environ.get("STUB_ECR_FAILS"):
        error("AccessDeniedException", "GetAuthorizationToken", "not authorized to perform: "
              "ecr:GetAuthorizationToken")
    print("ecr-token-from-the-stub")
elif args[:2] == ["logs", "create-log-stream"]:
    record({"call": "create-log-stream", "args": args})
    if os.environ.get("STUB_STREAM_EXISTS"):
        error("ResourceAlreadyExistsException", "CreateLogStream",
              "The specified log stream already exists")
elif args[:2] == ["logs", "put-log-events"]:
    events = json.load(open(option("--log-events").removeprefix("file://")))
    done = os.path.join(state, "puts")
    puts = int(open(done).read()) if os.path.exists(done) else 0
    fail_after = os.environ.get("STUB_PUT_FAIL_AFTER")
    if fail_after is not None and puts >= int(fail_after):
        record({"call": "put-log-events (failed)", "args": args})
        error("ServiceUnavailableException", "PutLogEvents", "The service is unavailable.")
    record({"call": "put-log-events", "args": args, "events": events})
    open(done, "w").write(str(puts + 1))
    print("None")
else:
    sys.exit("unexpected aws call: " + " ".join(args))
"""

STUB_CURL = """\
import os, sys
args = sys.argv[1:]
url = next(arg for arg in args if arg.startswith("http://169.254.169.254/"))
if url.endswith("/latest/api/token") and args[args.index("-X") + 1] == "PUT":
    print("imds-token", end="")
elif (url.endswith("/latest/meta-data/instance-id")
      and "X-aws-ec2-metadata-token: imds-token" in args):
    print(os.environ["STUB_INSTANCE_ID"], end="")
else:
    sys.exit(22)
"""

STUB_DOCKER = """\
import json, os, sys
args = sys.argv[1:]
entry = {"args": args}
if args[:1] == ["login"]:
    entry["password"] = sys.stdin.read().strip()
    print("Login Succeeded")
with open(os.path.join(os.environ["STUB_STATE"], "docker.jsonl"), "a") as log:
    log.write(json.dumps(entry) + "\\n")
if args[:1] == ["pull"]:
    if os.environ.get("STUB_PULL_FAILS"):
        sys.stderr.write(f"Error response from daemon: manifest for {args[-1]} not found: "
                         "manifest unknown: Requested image not found\\n")
        sys.exit(1)
    print(args[-1])
"""

STUB_JOURNALCTL = """\
import json, os, sys
args = sys.argv[1:]
with open(os.path.join(os.environ["STUB_STATE"], "journalctl.jsonl"), "a") as log:
    log.write(json.dumps(args) + "\\n")
if "--output=json" not in args or "--all" not in args:
    sys.exit("the stub speaks only --output=json --all")
units = {arg.split("=", 1)[1] for arg in args if arg.startswith("--unit=")}
entries = [json.loads(line) for line in open(os.environ["STUB_JOURNAL"])]
after = next((arg.split("=", 1)[1] for arg in args if arg.startswith("--after-cursor=")), None)
cursor_file = next((arg.split("=", 1)[1] for arg in args if arg.startswith("--cursor-file=")),
                   None)
if cursor_file and os.path.exists(cursor_file) and open(cursor_file).read().strip():
    after = open(cursor_file).read().strip()
start = 0
if after is not None:
    cursors = [entry["__CURSOR"] for entry in entries]
    if after not in cursors:
        sys.exit("Failed to seek to cursor: Invalid argument")
    start = cursors.index(after) + 1
shown = [entry for entry in entries[start:]
         if entry.get("_SYSTEMD_UNIT") in units or entry.get("UNIT") in units]
for entry in shown:
    print(json.dumps(entry))
if cursor_file and shown:
    open(cursor_file, "w").write(shown[-1]["__CURSOR"])
"""


@dataclass
class Box:
    """The rendered script with its stubs, state and directories, in a temp dir."""

    root: Path
    script: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def env_dir(self) -> Path:
        return self.root / "etc" / "mlflow-stack"

    @property
    def var_dir(self) -> Path:
        return self.root / "var" / "lib" / "mlflow-stack"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def run(self, *args: str, **stub_env: str) -> subprocess.CompletedProcess[str]:
        """The script with these arguments; the env and state dirs in the box, except for
        `units`, which names the paths of the instance."""
        env = {
            "PATH": f"{self.root / 'bin'}:/usr/bin:/bin",
            "TMPDIR": str(self.tmp),
            "STUB_STATE": str(self.state),
            "STUB_INSTANCE_ID": INSTANCE_ID,
            "STUB_JOURNAL": str(self.state / "journal.jsonl"),
            **stub_env,
        }
        if args[:1] != ("units",):
            env.update(
                MLFLOW_STACK_ENV_DIR=str(self.env_dir), MLFLOW_STACK_STATE_DIR=str(self.var_dir)
            )
        result = subprocess.run(
            ["/bin/bash", str(self.script), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert list(self.tmp.iterdir()) == [], "the script left its scratch directory behind"
        return result

    def calls(self, tool: str) -> list[Any]:
        path = self.state / f"{tool}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def reset_calls(self) -> None:
        for tool in ("aws", "docker", "journalctl"):
            (self.state / f"{tool}.jsonl").unlink(missing_ok=True)


def make_box(tmp_path: Path, script_text: str, secrets: dict[str, Any]) -> Box:
    jq = find_tool("jq")  # the real one: the script's journal batching is jq
    stubs = write_stubs(
        tmp_path / "bin",
        {"aws": STUB_AWS, "curl": STUB_CURL, "docker": STUB_DOCKER,
         "journalctl": STUB_JOURNALCTL},
        interpreter=f"{sys.executable} -S",
    )  # fmt: skip
    if Path(jq).parent not in (Path("/usr/bin"), Path("/bin")):
        (stubs / "jq").symlink_to(jq)
    for directory in ("state", "tmp"):
        (tmp_path / directory).mkdir()
    (tmp_path / "state" / "secrets.json").write_text(json.dumps(secrets))
    script = tmp_path / "user_data.sh"
    script.write_text(script_text)
    return Box(tmp_path, script)


@pytest.fixture
def box(rendered: Rendered, tmp_path: Path) -> Box:
    """The basic-auth script; its app secret has no client secret (as a stack's written before
    single sign-on existed)."""
    return make_box(tmp_path, rendered.script, SECRETS)


@pytest.fixture
def oidc_box(rendered: Rendered, tmp_path: Path) -> Box:
    """The single sign-on script, with the client secret in the app secret."""
    return make_box(tmp_path, rendered.oidc, SECRETS_OIDC)


# --- units ---


def test_units_are_written_and_systemd_analyze_verify_accepts_them(
    box: Box, tmp_path: Path
) -> None:
    """`units DIR` (what `install` writes into /etc/systemd/system) in a root tree with stub
    executables and stub dependencies: `systemd-analyze verify --root` loads the units there,
    checks every directive and that every command exists and is executable."""
    root = tmp_path / "root"
    result = box.run("units", str(root / "etc" / "systemd" / "system"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == result.stdout == ""
    written = sorted(path.name for path in (root / "etc" / "systemd" / "system").iterdir())
    assert written == sorted(UNITS)
    for executable in ("usr/bin/docker", "usr/local/sbin/mlflow-stack-boot"):
        path = root / executable
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    library = root / "usr" / "lib" / "systemd" / "system"
    library.mkdir(parents=True)
    for target in ("sysinit", "basic", "shutdown", "network-online", "multi-user", "timers"):
        (library / f"{target}.target").write_text(f"[Unit]\nDescription={target}\n")
    (library / "docker.service").write_text("[Service]\nExecStart=/usr/bin/docker\n")

    analyze = find_tool("systemd-analyze")
    verify = [analyze, "verify", f"--root={root}", *UNITS]
    result = subprocess.run(verify, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", "systemd-analyze verify warned"

    # The control: verify does look in the root tree (without docker there it refuses).
    (root / "usr" / "bin" / "docker").unlink()
    result = subprocess.run(verify, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "Command /usr/bin/docker is not executable" in result.stderr


def unit_file(box: Box, tmp_path: Path, name: str) -> dict[str, dict[str, list[str]]]:
    """A unit written by `units DIR`, as {section: {key: [values]}} (continuations joined)."""
    directory = tmp_path / "units"
    if not directory.exists():
        assert box.run("units", str(directory)).returncode == 0
    text = (directory / name).read_text().replace("\\\n", " ")
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            section.setdefault(key, []).append(" ".join(value.split()))
    return sections


def test_server_unit_retries_a_failed_prepare_for_ever(box: Box, tmp_path: Path) -> None:
    """systemd.service(5), Restart=: "The service process may be the main service process, but
    it may also be one of the processes specified with ExecStartPre=, ...", so a failed prepare
    (no "-" prefix, which would ignore its failure) restarts the unit after RestartSec, and
    StartLimitIntervalSec=0 lifts the start limit that would otherwise end the retries. Not run
    under a real systemd: there is none here (PID 1 is not systemd, `systemd --user` exits)."""
    unit = unit_file(box, tmp_path, "mlflow-stack.service")
    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"]
    service = unit["Service"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartSec"] == ["30"]
    assert service["ExecStartPre"][0] == "/usr/local/sbin/mlflow-stack-boot prepare"
    assert "StartLimitBurst" not in unit["Unit"] and "StartLimitAction" not in unit["Unit"]
    assert service["EnvironmentFile"] == ["-/etc/mlflow-stack/instance.env"]
    (run,) = service["ExecStart"]
    assert run.startswith("/usr/bin/docker run --rm --name mlflow-stack ")
    assert run.endswith(f" {IMAGE} serve")
    assert "--log-opt awslogs-stream=${INSTANCE_ID}/server" in run
    assert f"--log-opt awslogs-group={LOG_GROUP}" in run
    assert "--env-file /etc/mlflow-stack/mlflow.env" in run
    gc = unit_file(box, tmp_path, "mlflow-stack-gc.service")["Service"]
    assert "--log-opt awslogs-stream=${INSTANCE_ID}/gc" in gc["ExecStart"][0]
    assert gc["EnvironmentFile"] == ["-/etc/mlflow-stack/instance.env"]


def test_journal_is_shipped_every_minute(box: Box, tmp_path: Path) -> None:
    service = unit_file(box, tmp_path, "mlflow-stack-journal.service")["Service"]
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"] == ["/usr/local/sbin/mlflow-stack-boot ship-journal"]
    assert service["StateDirectory"] == ["mlflow-stack"]  # the cursor's home, writable
    timer = unit_file(box, tmp_path, "mlflow-stack-journal.timer")
    assert timer["Timer"]["OnBootSec"] == ["1min"]
    assert timer["Timer"]["OnUnitActiveSec"] == ["1min"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


def test_install_enables_the_units_it_writes(rendered: Rendered) -> None:
    install = re.search(r"^install_server\(\) \{\n(?P<body>.*?)^\}$", rendered.script, re.M | re.S)
    assert install, "no install_server function"
    body = install["body"]
    assert "  write_units /etc/systemd/system\n" in body
    enabled = " ".join(re.findall(r"systemctl enable (?:--now )?(.+)", body)).split()
    assert {"mlflow-stack.service", "mlflow-stack-gc.timer", "mlflow-stack-journal.timer"} <= set(
        enabled
    )


# --- prepare ---


def env_file_values(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_prepare_writes_the_env_file_from_the_secrets(box: Box) -> None:
    result = box.run("prepare")
    assert result.returncode == 0, result.stderr
    env_file = box.env_dir / "mlflow.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(box.env_dir.stat().st_mode) == 0o700
    values = env_file_values(env_file)
    assert set(values) == SERVE_SETTING_NAMES
    settings = Settings.from_env(values)  # raises ConfigError naming every bad value
    # The database password is not written: the server reads the secret itself.
    assert settings.postgres_password_secret_arn == DB_SECRET_ARN
    assert settings.postgres_password == settings.postgres_password_file == ""
    assert SECRETS[DB_SECRET_ARN]["password"] not in env_file.read_text()
    read = [c["args"] for c in box.calls("aws") if c["call"] == "get-secret-value"]
    assert [args[args.index("--secret-id") + 1] for args in read] == [APP_SECRET_ARN]
    app = SECRETS[APP_SECRET_ARN]
    assert settings.admin_password == app["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert settings.flask_secret_key == app["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert ALB in settings.allowed_hosts
    assert (box.env_dir / "instance.env").read_text() == f"INSTANCE_ID={INSTANCE_ID}\n"
    assert sorted(p.name for p in box.env_dir.iterdir()) == ["instance.env", "mlflow.env"]
    docker = box.calls("docker")
    assert docker[0] == {
        "args": ["login", "--username", "AWS", "--password-stdin", REGISTRY],
        "password": ECR_TOKEN,
    }
    assert docker[1] == {"args": ["pull", "--quiet", IMAGE]}
    assert result.stderr == f"mlflow-stack-boot: wrote {env_file}\n"


def test_prepare_in_basic_mode_needs_no_client_secret(box: Box) -> None:
    values = env_file_values_after_prepare(box)
    settings = Settings.from_env(values)
    assert settings.auth_mode == "basic"
    assert settings.oidc_client_secret == settings.oidc_issuer == settings.public_url == ""
    assert "MLFLOW_STACK_OIDC_CLIENT_SECRET" not in SECRETS[APP_SECRET_ARN]


def env_file_values_after_prepare(box: Box) -> dict[str, str]:
    result = box.run("prepare")
    assert result.returncode == 0, result.stderr
    return env_file_values(box.env_dir / "mlflow.env")


def test_prepare_with_single_sign_on_fills_the_client_secret_from_the_app_secret(
    oidc_box: Box,
) -> None:
    env_file = oidc_box.env_dir / "mlflow.env"
    values = env_file_values_after_prepare(oidc_box)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert set(values) == SERVE_SETTING_NAMES
    settings = Settings.from_env(values)  # oidc mode: raises if any SSO setting is missing
    assert settings.auth_mode == "oidc"
    assert settings.oidc_client_secret == CLIENT_SECRET
    assert settings.oidc_client_secret_file == ""
    assert settings.oidc_issuer == ISSUER
    assert settings.public_url == "https://mlflow.example.com"
    assert settings.oidc_scopes == ("openid", "profile", "email")
    assert settings.oidc_group_permissions == (
        ("analysts", "READ", "NO_PERMISSIONS"),
        ("ml-team", "EDIT", "EDIT"),
    )
    assert settings.admin_password == SECRETS[APP_SECRET_ARN]["MLFLOW_AUTH_ADMIN_PASSWORD"]
    read = [c["args"] for c in oidc_box.calls("aws") if c["call"] == "get-secret-value"]
    assert [args[args.index("--secret-id") + 1] for args in read] == [APP_SECRET_ARN]


def test_prepare_with_single_sign_on_says_in_one_line_that_the_client_secret_is_missing(
    oidc_box: Box,
) -> None:
    """Single sign-on turned on without raising secrets_version: the app secret was written
    before and has no client secret. One line saying how to write it; no env file."""
    (oidc_box.state / "secrets.json").write_text(json.dumps(SECRETS))
    result = oidc_box.run("prepare")
    assert result.returncode == 1
    assert result.stderr == (
        f'mlflow-stack-boot: the secret {APP_SECRET_ARN} has no "MLFLOW_STACK_OIDC_CLIENT_SECRET" '
        "value (single sign-on is on: apply with oidc_client_secret and a raised "
        "secrets_version to write it); systemd retries in 30 s\n"
    )
    assert not (oidc_box.env_dir / "mlflow.env").exists()


def test_prepare_says_in_one_line_that_the_image_is_missing(box: Box) -> None:
    """As long as the image is not pushed: one line naming it, exit 1 (systemd retries), and
    the env file of the last good start is left as it was."""
    assert box.run("prepare").returncode == 0
    env_file = box.env_dir / "mlflow.env"
    before = env_file.read_text()
    app = {**SECRETS[APP_SECRET_ARN], "MLFLOW_AUTH_ADMIN_PASSWORD": "A0New0One0That0Must0Not0Land"}
    (box.state / "secrets.json").write_text(json.dumps({**SECRETS, APP_SECRET_ARN: app}))

    result = box.run("prepare", STUB_PULL_FAILS="1")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"mlflow-stack-boot: cannot pull {IMAGE}: Error response from daemon: manifest for "
        f"{IMAGE} not found: manifest unknown: Requested image not found — is it pushed? (see "
        'terraform/README.md "Push the image"); systemd retries in 30 s\n'
    )
    assert env_file.read_text() == before
    assert sorted(p.name for p in box.env_dir.iterdir()) == ["instance.env", "mlflow.env"]
    assert not [c for c in box.calls("aws") if c["call"] == "get-secret-value"][1:]


def test_prepare_fails_in_one_line_without_any_env_file(box: Box) -> None:
    result = box.run("prepare", STUB_PULL_FAILS="1")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and IMAGE in result.stderr
    assert not (box.env_dir / "mlflow.env").exists()
    assert [p.name for p in box.env_dir.iterdir()] == ["instance.env"]


def test_prepare_says_in_one_line_that_a_secret_cannot_be_read(box: Box) -> None:
    (box.state / "secrets.json").write_text(json.dumps({DB_SECRET_ARN: SECRETS[DB_SECRET_ARN]}))
    result = box.run("prepare")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"mlflow-stack-boot: cannot read the secret {APP_SECRET_ARN}: ")
    assert "(AccessDeniedException) when calling the GetSecretValue operation" in line
    assert line.endswith("; systemd retries in 30 s")
    assert not (box.env_dir / "mlflow.env").exists()

    secrets = {**SECRETS, APP_SECRET_ARN: {"MLFLOW_AUTH_ADMIN_PASSWORD": "only-this-one"}}
    (box.state / "secrets.json").write_text(json.dumps(secrets))
    result = box.run("prepare")
    assert result.returncode == 1
    assert result.stderr == (
        f'mlflow-stack-boot: the secret {APP_SECRET_ARN} has no "MLFLOW_FLASK_SERVER_SECRET_KEY" '
        "value; systemd retries in 30 s\n"
    )
    assert not (box.env_dir / "mlflow.env").exists()


def test_prepare_needs_no_access_to_the_database_secret(box: Box) -> None:
    """The boot script never reads the database password (the server does, at each new
    connection): prepare succeeds where the stub refuses that secret."""
    (box.state / "secrets.json").write_text(json.dumps({APP_SECRET_ARN: SECRETS[APP_SECRET_ARN]}))
    result = box.run("prepare")
    assert result.returncode == 0, result.stderr
    values = env_file_values(box.env_dir / "mlflow.env")
    assert values["POSTGRES_PASSWORD_SECRET_ARN"] == DB_SECRET_ARN
    assert values["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD_FILE"] == ""
    assert all(DB_SECRET_ARN not in call["args"] for call in box.calls("aws"))


def test_prepare_says_in_one_line_that_the_registry_refuses_the_login(box: Box) -> None:
    result = box.run("prepare", STUB_ECR_FAILS="1")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"mlflow-stack-boot: cannot log in to the registry {REGISTRY}: ")
    assert "GetAuthorizationToken" in line and line.endswith("systemd retries in 30 s")
    assert not [call for call in box.calls("docker") if call["args"][0] == "pull"]


# --- ship-journal ---

T0 = 1_760_000_000_000_000  # microseconds, as __REALTIME_TIMESTAMP
HOUR = 3_600_000_000


class Journal:
    """Entries for the stub journalctl, and what CloudWatch should receive of them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        self.expected: list[tuple[int, int, str]] = []  # (timestamp ms, index, message)
        self.clock = T0

    def add(self, unit: str, message: Any, *, shipped: str | None = None, pid1: bool = False,
            comm: str = "mlflow-stack-bo", at: int | None = None) -> None:  # fmt: skip
        """One entry; `shipped` is the message CloudWatch gets ("" when none)."""
        index = len(self.entries)
        self.clock += 1000
        timestamp = self.clock if at is None else at
        entry: dict[str, Any] = {
            "__CURSOR": f"s=0f1e2d3c;i={index + 1:x};b=7a6b5c4d;m={timestamp:x};t={timestamp:x}",
            "__REALTIME_TIMESTAMP": str(timestamp),
            "_BOOT_ID": "7a6b5c4d",
            "MESSAGE": message,
            "PRIORITY": "6",
        }
        if pid1:
            entry.update(UNIT=unit, _SYSTEMD_UNIT="init.scope", _COMM="systemd", _PID="1")
        else:
            entry.update(_SYSTEMD_UNIT=unit, _COMM=comm, _PID="4242")
        self.entries.append(entry)
        if shipped is None:
            shipped = f"{unit}: {message}"
        if shipped and unit in JOURNAL_UNITS:
            self.expected.append((timestamp // 1000, index, shipped))

    def write(self) -> None:
        self.path.write_text("".join(json.dumps(entry) + "\n" for entry in self.entries))

    def messages(self, since: int = 0) -> list[str]:
        """What CloudWatch should hold of the entries from index `since`, in time order."""
        return [message for _, index, message in sorted(self.expected) if index >= since]

    def cursor(self, index: int = -1) -> str:
        return str(self.entries[index]["__CURSOR"])

    def index(self, cursor: str) -> int:
        return [entry["__CURSOR"] for entry in self.entries].index(cursor)


def first_boot(journal: Journal) -> None:
    """A first boot: cloud-init's run of `install`, the server retrying until the image is
    pushed, then serving and a gc run, with noise from other units and the containers."""
    server, gc, final = JOURNAL_UNITS
    journal.add(final, "Cloud-init v. 22.2.2 running 'modules:final'")
    journal.add("sshd.service", "Server listening on 0.0.0.0 port 22.", comm="sshd")
    journal.add(final, "Installed:\n  docker-25.0.8-1.amzn2023.0.4.x86_64\n")
    # journalctl's JSON gives a value that is not printable UTF-8 as its bytes.
    raw = list("\tcolumns\x1b[1m é ✓".encode() + b"\xff")
    journal.add(final, raw, shipped=f"{final}: \tcolumns\x1b[1m é ✓\ufffd")
    journal.add(server, "Starting MLflow tracking server...", pid1=True)
    journal.add(server, f"mlflow-stack-boot: cannot pull {IMAGE}: manifest unknown")
    # systemd's own lines already name the unit: not named twice.
    failed = f"{server}: Control process exited, code=exited, status=1/FAILURE"
    journal.add(server, failed, pid1=True, shipped=failed)
    # An entry logged a little earlier than the one before (from another journal file).
    failed = f"{server}: Failed with result 'exit-code'."
    journal.add(server, failed, pid1=True, at=journal.clock - 500, shipped=failed)
    # The container's output, which `docker run` echoes: in <instance id>/server already.
    journal.add(server, "Listening at: http://0.0.0.0:5000", comm="docker", shipped="")
    # Docker's own error is shipped.
    error = "docker: Error response from daemon: failed to initialize logging driver."
    journal.add(server, error, comm="docker")
    journal.add(server, None, shipped="")
    for number in range(12_000):  # more than one PutLogEvents call holds
        journal.add(gc, f"gc: deleted run {number:05d}")
        if number % 3000 == 0:
            journal.add("sshd.service", "Accepted publickey for ec2-user", comm="sshd")
    for number in range(30):  # more than a megabyte
        journal.add(server, f"{number:02d} " + "x" * 40_000)
    journal.add(server, "a line after two quiet days", at=journal.clock + 48 * HOUR)
    journal.clock += 48 * HOUR
    journal.add(gc, "Listening at: the gc container", comm="docker", shipped="")


def puts(box: Box) -> list[dict[str, Any]]:
    return [call for call in box.calls("aws") if call["call"] == "put-log-events"]


def shipped_messages(box: Box) -> list[str]:
    return [event["message"] for put in puts(box) for event in put["events"]]


def assert_within_the_limits(put: dict[str, Any]) -> None:
    args = put["args"]
    assert args[args.index("--log-group-name") + 1] == LOG_GROUP
    assert args[args.index("--log-stream-name") + 1] == STREAM
    assert args[args.index("--region") + 1] == REGION
    events = put["events"]
    assert 1 <= len(events) <= 10_000
    assert sum(len(event["message"].encode()) + 26 for event in events) <= 1_048_576
    stamps = [event["timestamp"] for event in events]
    assert all(isinstance(stamp, int) for stamp in stamps)
    assert stamps == sorted(stamps), "PutLogEvents wants the events in time order"
    assert stamps[-1] - stamps[0] <= 24 * 3_600_000
    assert all(event["message"] for event in events)


@pytest.fixture
def journal(box: Box) -> Journal:
    journal = Journal(box.state / "journal.jsonl")
    first_boot(journal)
    journal.write()
    return journal


def test_ship_journal_ships_every_line_once_in_order_and_in_chunks(
    box: Box, journal: Journal
) -> None:
    result = box.run("ship-journal")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    (invocation,) = box.calls("journalctl")
    assert {arg for arg in invocation if arg.startswith("--unit=")} == {
        f"--unit={unit}" for unit in JOURNAL_UNITS
    }
    assert "--boot" in invocation  # the first run: this boot only
    creates = [call for call in box.calls("aws") if call["call"] == "create-log-stream"]
    assert len(creates) == 1
    args = creates[0]["args"]
    assert args[args.index("--log-stream-name") + 1] == STREAM
    assert args[args.index("--log-group-name") + 1] == LOG_GROUP
    assert len(puts(box)) >= 3
    for put in puts(box):
        assert_within_the_limits(put)
    assert shipped_messages(box) == journal.messages()
    assert (box.var_dir / "journal.cursor").read_text() == journal.cursor() + "\n"
    assert stat.S_IMODE(box.var_dir.stat().st_mode) == 0o700

    # Nothing new: nothing shipped, nothing created, the cursor stays.
    box.reset_calls()
    result = box.run("ship-journal")
    assert result.returncode == 0, result.stderr
    assert box.calls("aws") == []
    (invocation,) = box.calls("journalctl")
    assert f"--after-cursor={journal.cursor()}" in invocation
    assert (box.var_dir / "journal.cursor").read_text() == journal.cursor() + "\n"

    # New lines: only they are shipped, also when the stream exists already.
    since = len(journal.entries)
    journal.add("mlflow-stack.service", "Stopping MLflow tracking server...", pid1=True)
    journal.add("mlflow-stack.service", "Handling signal: term", comm="docker", shipped="")
    journal.add("mlflow-stack-gc.service", "gc: done")
    journal.write()
    box.reset_calls()
    result = box.run("ship-journal", STUB_STREAM_EXISTS="1")
    assert result.returncode == 0, result.stderr
    assert (
        shipped_messages(box)
        == journal.messages(since)
        == [
            "mlflow-stack.service: Stopping MLflow tracking server...",
            "mlflow-stack-gc.service: gc: done",
        ]
    )
    assert (box.var_dir / "journal.cursor").read_text() == journal.cursor() + "\n"


def test_ship_journal_loses_nothing_when_cloudwatch_fails(box: Box, journal: Journal) -> None:
    # Every put fails: one line, the cursor stays where it was (none yet).
    result = box.run("ship-journal", STUB_PUT_FAIL_AFTER="0")
    assert result.returncode == 1
    assert result.stderr == (
        f"mlflow-stack-boot: cannot ship the journal to {LOG_GROUP}, stream {STREAM}: An error "
        "occurred (ServiceUnavailableException) when calling the PutLogEvents operation: The "
        "service is unavailable.; the next run ships the same entries again\n"
    )
    assert puts(box) == []
    assert not (box.var_dir / "journal.cursor").exists()

    # The first put passes, the second fails: the cursor stops after the first batch.
    result = box.run("ship-journal", STUB_PUT_FAIL_AFTER="1")
    assert result.returncode == 1
    assert len(puts(box)) == 1
    cursor = (box.var_dir / "journal.cursor").read_text().strip()
    shipped_through = journal.index(cursor)
    assert 0 < shipped_through < len(journal.entries) - 1
    assert sorted(shipped_messages(box)) == sorted(
        message for _, index, message in journal.expected if index <= shipped_through
    )

    # CloudWatch is back: the rest, and only the rest.
    result = box.run("ship-journal")
    assert result.returncode == 0, result.stderr
    assert shipped_messages(box) == journal.messages()  # every line exactly once, in order
    for put in puts(box):
        assert_within_the_limits(put)
    assert (box.var_dir / "journal.cursor").read_text() == journal.cursor() + "\n"


def test_ship_journal_starts_again_after_an_unreadable_cursor(box: Box, journal: Journal) -> None:
    box.var_dir.mkdir(parents=True)
    (box.var_dir / "journal.cursor").write_text("s=from-another-journal\n")
    result = box.run("ship-journal")
    assert result.returncode == 1
    assert result.stderr == (
        "mlflow-stack-boot: journalctl failed: Failed to seek to cursor: Invalid argument\n"
    )
    assert not (box.var_dir / "journal.cursor").exists()
    result = box.run("ship-journal")
    assert result.returncode == 0, result.stderr
    assert shipped_messages(box) == journal.messages()


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    leftovers = list((tmp_path / "etc" / "mlflow-stack").glob(".*"))
    assert leftovers == [], "a half-written file was left behind"
