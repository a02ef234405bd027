"""Two deployments of the root configuration against moto servers on loopback, applied side by
side and in the background (the apply waits ~2 minutes on provider waiters, so the other
Terraform tests run meanwhile): the defaults users get (two servers behind the load balancer on
plain HTTP, detailed monitoring, the database's CA) and the HTTPS variant (TLS in one variable:
a Route 53 zone, so a DNS-validated certificate, an alias record and the HTTP redirect; and
single sign-on, which needs TLS). Each has
its own moto server (tests/terraform/moto_launcher.py), because moto holds only one
aws_db_instance per server."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.terraform.conftest import (
    MotoServer,
    Running,
    SharedProvider,
    Terraform,
    TerraformFactory,
    start_shared_provider,
    write_stubs,
)

ALLOWED_CIDRS = ["203.0.113.0/24", "2001:db8::/48"]
DOMAIN = "mlflow.example.com"
#: Single sign-on of the HTTPS variant (it needs TLS): what the root's oidc_* variables get.
OIDC_ISSUER = "https://login.example.com/realms/ml"
OIDC_CLIENT_ID = "mlflow-server"
OIDC_CLIENT_SECRET = "Oidc0Client0Secret0Given0To0Terraform"
ZONE = "example.com"
SERVICES = (
    "acm",
    "autoscaling",
    "cloudwatch",
    "ec2",
    "ecr",
    "elbv2",
    "iam",
    "kms",
    "logs",
    "rds",
    "route53",
    "s3",
    "secretsmanager",
    "sns",
    "ssm",
    "sts",
)


def moto_override(url: str) -> str:
    endpoints = "\n".join(f'    {service:<14} = "{url}"' for service in SERVICES)
    return f"""\
# Written by tests/terraform/emulator.py: the provider talks to moto on loopback.
provider "aws" {{
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = false # with true, rules that reference groups never settle
  s3_use_path_style           = true

  endpoints {{
{endpoints}
  }}
}}
"""


@dataclass(frozen=True)
class Variant:
    key: str
    name: str
    tls: bool  # and single sign-on, which needs it
    egress: str  # server_egress: how the private servers reach AWS's APIs

    def tfvars(self, zone_id: str) -> str:
        text = f"""\
name                        = "{self.name}"
allowed_cidrs               = {json.dumps(ALLOWED_CIDRS)}
# A throwaway environment: destroy must remove everything at once.
deletion_protection         = false
skip_final_snapshot         = true
force_destroy               = true
secret_recovery_window_days = 0
kms_deletion_window_days    = 7
# moto's account has never used Auto Scaling, so it has no service-linked role yet.
create_autoscaling_service_linked_role = true
server_egress = "{self.egress}"
"""
        if self.tls:
            text += f'route53_zone_id = "{zone_id}"\ndomain_name     = "{DOMAIN}"\n'
            # Single sign-on: the client secret reaches the app secret, never the state.
            text += f'oidc_issuer            = "{OIDC_ISSUER}"\n'
            text += f'oidc_client_id         = "{OIDC_CLIENT_ID}"\n'
            text += f'oidc_client_secret     = "{OIDC_CLIENT_SECRET}"\n'
            text += 'oidc_group_permissions = { "ml-team" = "EDIT" }\n'
        else:
            text += "# No TLS: the operator's explicit choice (a VPN-only load balancer).\n"
            text += "allow_plain_http = true\n"
        return text


VARIANTS = (
    Variant("http", "mlflow-ci", tls=False, egress="nat"),
    Variant("https", "mlflow-tls", tls=True, egress="endpoints"),
)


@dataclass
class Deployment:
    variant: Variant
    terraform: Terraform
    moto: MotoServer
    zone_id: str = ""
    apply_output: str = ""
    apply_seconds: float = 0.0
    upgrade_output: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)

    def aws(self, service: str) -> Any:
        return self.moto.client(service)

    def group(self) -> dict[str, Any]:
        """The servers' Auto Scaling group as AWS describes it."""
        (group,) = self.aws("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.outputs["autoscaling_group_name"]]
        )["AutoScalingGroups"]
        return dict(group)

    @property
    def instance_ids(self) -> list[str]:
        """The group's servers."""
        return sorted(i["InstanceId"] for i in self.group()["Instances"])

    @property
    def instance_id(self) -> str:
        return self.instance_ids[0]

    def instances(self) -> list[dict[str, Any]]:
        reservations = self.aws("ec2").describe_instances(InstanceIds=self.instance_ids)
        return [dict(i) for r in reservations["Reservations"] for i in r["Instances"]]

    def instance(self) -> dict[str, Any]:
        return self.instances()[0]

    def user_data(self) -> str:
        """The boot script a server actually received (from the launch template)."""
        attribute = self.aws("ec2").describe_instance_attribute(
            InstanceId=self.instance_id, Attribute="userData"
        )
        return base64.b64decode(attribute["UserData"]["Value"]).decode()

    def boot_prepare(self, directory: Path) -> BootPrepare:
        """Run the rendered boot script's `prepare` step, as systemd does before each start,
        with aws, curl, jq and docker stubbed: secrets come from moto, the instance ID from a
        server of the group moto describes. It writes the env file into ``directory``."""
        instance = self.instance()
        stubs = write_stubs(
            directory / "bin",
            {"aws": STUB_AWS, "curl": STUB_CURL, "jq": STUB_JQ, "docker": STUB_DOCKER},
        )
        script = directory / "user_data.sh"
        script.write_text(self.user_data())
        calls = directory / "calls.log"
        env = {
            "PATH": f"{stubs}:/usr/bin:/bin",
            "MLFLOW_STACK_ENV_DIR": str(directory / "etc"),
            "MOTO_URL": self.moto.url,
            "STUB_CALLS": str(calls),
            "STUB_INSTANCE_ID": instance["InstanceId"],
        }
        result = subprocess.run(
            ["/bin/bash", str(script), "prepare"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return BootPrepare(result, directory / "etc" / "mlflow.env", calls, script)

    def plan(self, *args: str) -> dict[str, Any]:
        """A saved plan (upgrade.tfplan) with extra arguments, as `terraform show -json` has it."""
        self.terraform.run("plan", "-no-color", "-out=upgrade.tfplan", *args, timeout=600)
        return dict(json.loads(self.terraform.run("show", "-json", "upgrade.tfplan").stdout))

    def apply_plan(self) -> float:
        """Apply upgrade.tfplan; the outputs are read again. Returns the wall time."""
        started = time.monotonic()
        result = self.terraform.run(
            "apply", "-no-color", "-parallelism=20", "upgrade.tfplan", timeout=900
        )
        seconds = time.monotonic() - started
        self.upgrade_output = result.stdout
        outputs = json.loads(self.terraform.run("output", "-json").stdout)
        self.outputs = {name: value["value"] for name, value in outputs.items()}
        return seconds

    def secret(self, arn: str) -> dict[str, str]:
        value = self.aws("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
        return dict(json.loads(value))

    def state_text(self) -> str:
        return (self.terraform.workdir / "terraform.tfstate").read_text()


APPLY = ("apply", "-auto-approve", "-no-color", "-parallelism=20")
DESTROY = ("destroy", "-auto-approve", "-no-color", "-refresh=false", "-parallelism=20")


@dataclass(frozen=True)
class BootPrepare:
    result: subprocess.CompletedProcess[str]
    env_file: Path
    calls: Path  # what the stubs were asked, one line each
    script: Path  # the rendered boot script


STUB_AWS = """\
import json, os, sys
import boto3
args = sys.argv[1:]
with open(os.environ["STUB_CALLS"], "a") as log:
    log.write("aws " + " ".join(args) + "\\n")
def client(service):
    return boto3.client(service, endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
if args[:2] == ["secretsmanager", "get-secret-value"]:
    secret_id = args[args.index("--secret-id") + 1]
    print(client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])
elif args[:2] == ["ecr", "get-login-password"]:
    print("token-from-the-stub")
else:
    sys.exit("unexpected aws call: " + " ".join(args))
"""

STUB_CURL = """\
import os, sys
url = next(arg for arg in sys.argv[1:] if arg.startswith("http://"))
if url.endswith("/latest/api/token"):
    print("imds-token", end="")
elif url.endswith("/meta-data/instance-id"):
    print(os.environ["STUB_INSTANCE_ID"], end="")
else:
    sys.exit(22)
"""

STUB_JQ = """\
import json, sys
value = json.load(sys.stdin).get(sys.argv[-1].lstrip("."))
if value is None:
    sys.exit(1)
print(value)
"""

STUB_DOCKER = """\
import os, sys
if sys.argv[1:2] == ["login"]:
    sys.stdin.read()
with open(os.environ["STUB_CALLS"], "a") as log:
    log.write("docker " + " ".join(sys.argv[1:]) + "\\n")
"""


class Emulation:
    """Both deployments: initialised and applied in the background, awaited on first use."""

    def __init__(self, factory: TerraformFactory, servers: list[MotoServer]) -> None:
        self.deployments: list[Deployment] = []
        #: One provider process per deployment, each configured for its own moto by every
        #: command in turn: Terraform would otherwise start the provider two or three times
        #: per command (~2 s of CPU each). A deployment's commands never overlap.
        self.providers: list[SharedProvider] = []
        self._applying: dict[str, Running] | None = None
        self._applied: dict[str, Deployment] | None = None
        self._destroying: dict[str, Running] | None = None
        self._failure = ""
        try:
            for variant, server in zip(VARIANTS, servers, strict=True):
                self.deployments.append(self._prepare(factory, variant, server))
            self._applying = self._start(APPLY)
        except BaseException:
            self.cleanup()
            raise

    def _prepare(
        self, factory: TerraformFactory, variant: Variant, server: MotoServer
    ) -> Deployment:
        terraform = factory.copy(f"moto-{variant.key}")
        provider = start_shared_provider(terraform.workdir.parent / f"provider-{variant.key}.log")
        self.providers.append(provider)
        # terraform/scripts/roll-out.sh, which apply runs, calls the AWS CLI: at this moto.
        terraform = replace(terraform, env={**terraform.env, "AWS_ENDPOINT_URL": server.url})
        deployed = Deployment(variant, terraform.sharing(provider), server)
        if variant.tls:
            route53 = server.client("route53")
            zone = route53.create_hosted_zone(Name=ZONE, CallerReference=variant.name)
            deployed.zone_id = zone["HostedZone"]["Id"].rsplit("/", 1)[-1]
        (terraform.workdir / "moto_override.tf").write_text(moto_override(server.url))
        (terraform.workdir / "moto.auto.tfvars").write_text(variant.tfvars(deployed.zone_id))
        terraform.init()  # without the provider process: init installs the mirror's binary
        return deployed

    def _start(self, args: tuple[str, ...]) -> dict[str, Running]:
        return {
            d.variant.key: d.terraform.start(*args, log=d.terraform.workdir / f"{args[0]}.log")
            for d in self.deployments
        }

    def _wait(
        self, running: dict[str, Running], args: tuple[str, ...]
    ) -> dict[str, tuple[str, float]]:
        results = {}
        try:
            for deployed in self.deployments:
                returncode, output, seconds = running[deployed.variant.key].wait(timeout=900)
                if returncode != 0:
                    pytest.fail(
                        f"terraform {' '.join(args)} failed for {deployed.variant.name} "
                        f"(exit {returncode}):\n{output[-8000:]}"
                    )
                results[deployed.variant.key] = (output, seconds)
        finally:
            for run in running.values():
                run.stop()
        return results

    def applied(self) -> dict[str, Deployment]:
        """The deployments once both applies have finished (fails if either failed)."""
        if self._failure:
            pytest.fail(self._failure)
        if self._applied is None and self._applying is not None:
            running, self._applying = self._applying, None
            try:
                results = self._wait(running, APPLY)
            except pytest.fail.Exception as error:
                self._failure = str(error)
                raise
            for deployed in self.deployments:
                deployed.apply_output, deployed.apply_seconds = results[deployed.variant.key]
                outputs = json.loads(deployed.terraform.run("output", "-json").stdout)
                deployed.outputs = {name: value["value"] for name, value in outputs.items()}
            self._applied = {d.variant.key: d for d in self.deployments}
        assert self._applied is not None
        return self._applied

    def start_destroy(self) -> None:
        """Begin destroying both side by side, once nothing reads the deployments any more.
        It mostly waits on provider waiters (~90 s), so it runs while other tests do."""
        if self._destroying is None and self._applied is not None:
            self._destroying = self._start(DESTROY)

    def destroy(self) -> dict[str, float]:
        """Destroy both side by side (or wait for the destroy started earlier); wall time of
        each."""
        self.applied()
        self.start_destroy()
        assert self._destroying is not None
        results = self._wait(self._destroying, DESTROY)
        return {key: seconds for key, (_, seconds) in results.items()}

    def cleanup(self) -> None:
        """Stop an apply or destroy that still runs (the session ended early). Nothing else is
        left to clean but the providers: the moto servers hold everything in memory and stop
        with the session."""
        for run in [*(self._applying or {}).values(), *(self._destroying or {}).values()]:
            run.stop()
        for provider in self.providers:
            provider.stop()
