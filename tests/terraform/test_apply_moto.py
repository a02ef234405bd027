"""`terraform apply` and `terraform destroy` of the root configuration against a moto server on
loopback (provider endpoints pointed at it by an override file in a private copy).

What this proves: the configuration applies as a whole, the parts are wired together (the
database admits the server's security group, the role names this bucket and these secrets, the
env file names every setting with values the server accepts), secure settings reach the API, no
password lands in the state, the boot script is shellcheck-clean and its `prepare` step writes a
valid env file, and destroy leaves nothing behind. What it cannot prove: that the AMI boots,
that Docker runs the image there, or that real AWS accepts every request the way moto does (moto
does not evaluate IAM or KMS key policies).

Two deployments (tests/terraform/emulator.py), the default and the HTTPS variant, are applied
side by side in the background while the other Terraform tests run; these tests then check both
and destroy both, in this order.
"""

from __future__ import annotations

import json
import re
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.settings import SETTING_NAMES, Settings
from tests.conftest import which_or_fail
from tests.terraform.emulator import ALLOWED_CIDRS, DOMAIN, VARIANTS, Deployment, Emulation

_APPLIED = re.compile(r"Apply complete! Resources: (\d+) added, 0 changed, 0 destroyed\.")
_ENV_HEREDOC = re.compile(r'^  cat >"\$tmp" <<EOF\n(?P<body>.*?)\nEOF$', re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def deployments(emulation: Emulation) -> dict[str, Deployment]:
    return emulation.applied()


@pytest.fixture(params=[variant.key for variant in VARIANTS])
def deployment(request: pytest.FixtureRequest, deployments: dict[str, Deployment]) -> Deployment:
    return deployments[request.param]


# --- apply ---


def test_apply_creates_every_resource(deployment: Deployment) -> None:
    print(f"apply of {deployment.variant.name}: {deployment.apply_seconds:.0f} s")
    summary = _APPLIED.search(deployment.apply_output)
    assert summary, deployment.apply_output[-3000:]
    state = deployment.terraform.run("state", "list").stdout.split()
    managed = [address for address in state if ".data." not in f".{address}"]
    assert len(managed) == int(summary[1])
    for expected in (
        "aws_kms_key.this",
        "module.network.aws_vpc.this[0]",
        "module.network.aws_default_security_group.this[0]",
        "module.network.aws_flow_log.this[0]",
        "module.database.aws_db_instance.this",
        "module.database.aws_secretsmanager_secret_version.this",
        "module.artifacts.aws_s3_bucket_policy.this",
        "module.server.aws_instance.this",
        "module.server.aws_ecr_repository.this[0]",
        "module.server.aws_secretsmanager_secret_version.app",
        *(
            ["module.server.aws_lb.this[0]", "module.server.aws_lb_listener.https[0]"]
            if deployment.variant.tls
            else []
        ),
    ):
        assert expected in managed, expected


def test_outputs_are_not_empty(deployment: Deployment) -> None:
    for name in (
        "tracking_uri",
        "bucket_name",
        "database_endpoint",
        "admin_password_secret_arn",
        "database_secret_arn",
        "instance_id",
        "ecr_repository_url",
        "kms_key_arn",
    ):
        assert deployment.outputs.get(name), f"output {name} is empty"
    if deployment.variant.tls:
        assert deployment.outputs["tracking_uri"] == f"https://{DOMAIN}"
        assert deployment.outputs["load_balancer_dns_name"]
    else:
        assert deployment.outputs["tracking_uri"].startswith("http://")
        assert deployment.outputs["tracking_uri"].endswith(":5000")
        assert deployment.outputs.get("load_balancer_dns_name") is None  # null: not in the output
    assert deployment.outputs["admin_password_secret_arn"].startswith("arn:aws:secretsmanager:")
    assert deployment.outputs["instance_id"].startswith("i-")


def test_database_is_private_encrypted_and_backed_up(deployment: Deployment) -> None:
    rds = deployment.aws("rds")
    (database,) = rds.describe_db_instances()["DBInstances"]
    assert database["DBInstanceIdentifier"] == deployment.variant.name
    assert database["Engine"] == "postgres"
    assert database["PubliclyAccessible"] is False
    assert database["StorageEncrypted"] is True
    assert database["KmsKeyId"] == deployment.outputs["kms_key_arn"]
    assert database["BackupRetentionPeriod"] == 7
    assert database["IAMDatabaseAuthenticationEnabled"] is True
    assert f"{database['Endpoint']['Address']}:5432" == deployment.outputs["database_endpoint"]
    group = database["DBParameterGroups"][0]["DBParameterGroupName"]
    parameters = {
        p["ParameterName"]: p.get("ParameterValue")
        for p in rds.describe_db_parameters(DBParameterGroupName=group)["Parameters"]
    }
    assert parameters.get("rds.force_ssl") == "1"


def test_database_admits_only_the_server_security_group(deployment: Deployment) -> None:
    (database,) = deployment.aws("rds").describe_db_instances()["DBInstances"]
    (membership,) = database["VpcSecurityGroups"]
    ec2 = deployment.aws("ec2")
    (group,) = ec2.describe_security_groups(GroupIds=[membership["VpcSecurityGroupId"]])[
        "SecurityGroups"
    ]
    server_groups = _groups_named(deployment, "server")
    assert server_groups == _instance_groups(deployment.instance())
    (rule,) = group["IpPermissions"]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 5432, 5432)
    assert [pair["GroupId"] for pair in rule["UserIdGroupPairs"]] == server_groups
    assert not rule.get("IpRanges") and not rule.get("Ipv6Ranges")


def _groups_named(deployment: Deployment, role: str) -> list[str]:
    """IDs of the stack's security groups whose name starts with <name>-<role>-."""
    pattern = f"{deployment.variant.name}-{role}-*"
    groups = deployment.aws("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [pattern]}]
    )["SecurityGroups"]
    return sorted(g["GroupId"] for g in groups)


def _cidr_sources(rule: dict[str, Any]) -> set[str]:
    return {r["CidrIp"] for r in rule.get("IpRanges", [])} | {
        r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])
    }


def test_no_security_group_admits_the_internet(deployment: Deployment) -> None:
    """Address ranges reach one port of one group: the MLflow port of the instance, or 443 on
    the load balancer; and never 0.0.0.0/0."""
    ec2 = deployment.aws("ec2")
    vpc_id = deployment.outputs["vpc_id"]
    groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
        "SecurityGroups"
    ]
    front = _groups_named(deployment, "alb" if deployment.variant.tls else "server")
    port = 443 if deployment.variant.tls else 5000
    opened = set()
    for group in groups:
        for rule in group["IpPermissions"]:
            sources = _cidr_sources(rule)
            assert not {"0.0.0.0/0", "::/0"} & sources, (group["GroupName"], rule)
            if sources:
                assert group["GroupId"] in front, (group["GroupName"], rule)
                assert (rule["FromPort"], rule["ToPort"]) == (port, port), rule
                opened |= sources
    assert opened == set(ALLOWED_CIDRS)
    (default,) = [g for g in groups if g["GroupName"] == "default"]
    assert default["IpPermissions"] == [] and default["IpPermissionsEgress"] == []


def test_bucket_blocks_public_access_and_insecure_transport(deployment: Deployment) -> None:
    s3 = deployment.aws("s3")
    bucket = deployment.outputs["bucket_name"]
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": deployment.outputs["kms_key_arn"],
    }
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert any(
        statement["Effect"] == "Deny"
        and statement["Condition"].get("Bool", {}).get("aws:SecureTransport") == "false"
        for statement in policy["Statement"]
    ), policy


def test_instance_requires_imdsv2_and_encrypts_its_root_volume(deployment: Deployment) -> None:
    instance = deployment.instance()
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["MetadataOptions"]["HttpEndpoint"] == "enabled"
    assert "KeyName" not in instance or not instance["KeyName"]
    assert instance["IamInstanceProfile"]["Arn"]
    volume_ids = [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
    volumes = deployment.aws("ec2").describe_volumes(VolumeIds=volume_ids)["Volumes"]
    assert volumes and all(v["Encrypted"] for v in volumes)
    assert all(v["KmsKeyId"] == deployment.outputs["kms_key_arn"] for v in volumes)


def test_instance_role_uses_only_this_bucket_and_these_secrets(deployment: Deployment) -> None:
    iam = deployment.aws("iam")
    profile_name = deployment.instance()["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
    (role,) = iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]["Roles"]
    policy = iam.get_role_policy(RoleName=role["RoleName"], PolicyName="mlflow-server")
    statements = policy["PolicyDocument"]["Statement"]
    bucket_arn = f"arn:aws:s3:::{deployment.outputs['bucket_name']}"
    s3_resources = {
        resource
        for statement in statements
        if any(action.startswith("s3:") for action in _as_list(statement["Action"]))
        for resource in _as_list(statement["Resource"])
    }
    assert s3_resources == {bucket_arn, f"{bucket_arn}/*"}
    secret_resources = {
        resource
        for statement in statements
        if "secretsmanager:GetSecretValue" in _as_list(statement["Action"])
        for resource in _as_list(statement["Resource"])
    }
    assert secret_resources == {
        deployment.outputs["database_secret_arn"],
        deployment.outputs["admin_password_secret_arn"],
    }
    attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == ["AmazonSSMManagedInstanceCore"]


def _instance_groups(instance: dict[str, Any]) -> list[str]:
    """The instance's security groups (moto lists them on its network interface)."""
    groups = [g["GroupId"] for g in instance.get("SecurityGroups", [])]
    groups += [g["GroupId"] for eni in instance.get("NetworkInterfaces", []) for g in eni["Groups"]]
    return sorted(set(groups))


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def test_passwords_are_generated_and_never_in_the_state(deployment: Deployment) -> None:
    database = deployment.secret(deployment.outputs["database_secret_arn"])
    app = deployment.secret(deployment.outputs["admin_password_secret_arn"])
    assert set(app) == {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"}
    assert database["username"] == "mlflow"
    assert f"{database['host']}:{database['port']}" == deployment.outputs["database_endpoint"]
    passwords = [database["password"], *app.values()]
    for password in passwords:
        assert re.fullmatch(r"[A-Za-z0-9]{32,}", password)
    assert len(set(passwords)) == 3
    state = deployment.state_text()
    for password in passwords:
        assert password not in state
    user_data = deployment.user_data()
    for password in passwords:
        assert password not in user_data


def test_user_data_passes_shellcheck(deployment: Deployment, tmp_path: Path) -> None:
    script = tmp_path / "user_data.sh"
    script.write_text(deployment.user_data())
    result = subprocess.run(
        [which_or_fail("shellcheck"), "--shell=bash", "--external-sources", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_env_file_names_exactly_the_settings(deployment: Deployment) -> None:
    match = _ENV_HEREDOC.search(deployment.user_data())
    assert match, "the boot script writes no env file"
    names = [line.split("=", 1)[0] for line in match["body"].splitlines()]
    assert len(names) == len(set(names)), "a setting is written twice"
    assert set(names) == SETTING_NAMES, {
        "missing": sorted(SETTING_NAMES - set(names)),
        "unknown": sorted(set(names) - SETTING_NAMES),
    }


def test_boot_script_prepare_writes_a_valid_env_file(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Run the rendered script's `prepare` step with aws, curl, jq and docker stubbed: secrets
    come from moto, metadata from the instance moto describes. The env file it writes must
    be private and parse as the server's settings."""
    instance = deployment.instance()
    boot = deployment.boot_prepare(tmp_path)
    result, env_file, env_dir = boot.result, boot.env_file, boot.env_file.parent
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(env_dir.stat().st_mode) == 0o700
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert set(values) == SETTING_NAMES
    settings = Settings.from_env(values)  # raises ConfigError naming every bad value
    database = deployment.secret(deployment.outputs["database_secret_arn"])
    assert settings.postgres_password == database["password"]
    assert (
        f"{settings.postgres_host}:{settings.postgres_port}"
        == (deployment.outputs["database_endpoint"])
    )
    assert settings.postgres_sslmode == "require"
    assert settings.artifacts_destination == f"s3://{deployment.outputs['bucket_name']}"
    assert settings.s3_endpoint_url == "" and settings.s3_access_key == ""
    assert (settings.host, settings.port) == ("0.0.0.0", 5000)
    assert instance["PublicDnsName"] in settings.allowed_hosts
    if deployment.variant.tls:
        assert DOMAIN in settings.allowed_hosts
        assert deployment.outputs["load_balancer_dns_name"] in settings.allowed_hosts
    logged = boot.calls.read_text()
    assert "docker login --username AWS --password-stdin 123456789012.dkr.ecr." in logged
    assert f"docker pull --quiet {deployment.outputs['image']}" in logged


def test_https_load_balancer_fronts_the_instance(deployments: dict[str, Deployment]) -> None:
    deployment = deployments["https"]
    elbv2 = deployment.aws("elbv2")
    (balancer,) = elbv2.describe_load_balancers()["LoadBalancers"]
    assert balancer["DNSName"] == deployment.outputs["load_balancer_dns_name"]
    assert sorted(balancer["SecurityGroups"]) == _groups_named(deployment, "alb")
    attributes = {
        a["Key"]: a["Value"]
        for a in elbv2.describe_load_balancer_attributes(
            LoadBalancerArn=balancer["LoadBalancerArn"]
        )["Attributes"]
    }
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    (listener,) = elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    assert (listener["Port"], listener["Protocol"]) == (443, "HTTPS")
    assert listener["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert [c["CertificateArn"] for c in listener["Certificates"]] == [deployment.certificate_arn]
    (target_group,) = elbv2.describe_target_groups()["TargetGroups"]
    assert (target_group["Port"], target_group["Protocol"]) == (5000, "HTTP")
    assert target_group["HealthCheckPath"] == "/health"
    targets = elbv2.describe_target_health(TargetGroupArn=target_group["TargetGroupArn"])
    assert [t["Target"]["Id"] for t in targets["TargetHealthDescriptions"]] == [
        deployment.instance_id
    ]
    # The instance takes the MLflow port from the load balancer's group and nothing else.
    (server_group,) = _groups_named(deployment, "server")
    (group,) = deployment.aws("ec2").describe_security_groups(GroupIds=[server_group])[
        "SecurityGroups"
    ]
    (rule,) = group["IpPermissions"]
    assert (rule["FromPort"], rule["ToPort"]) == (5000, 5000)
    assert [p["GroupId"] for p in rule["UserIdGroupPairs"]] == _groups_named(deployment, "alb")
    assert not _cidr_sources(rule)


# --- destroy ---


def test_destroy_leaves_nothing(emulation: Emulation, deployments: dict[str, Deployment]) -> None:
    seconds = emulation.destroy()
    for deployment in deployments.values():
        print(f"destroy of {deployment.variant.name}: {seconds[deployment.variant.key]:.0f} s")
        assert deployment.terraform.run("state", "list", check=False).stdout.strip() == ""
        assert_nothing_left(deployment)


def assert_nothing_left(deployment: Deployment) -> None:
    name = deployment.variant.name
    ec2 = deployment.aws("ec2")
    instances = [
        i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    assert instances == []
    tagged = [{"Name": "tag:mlflow-stack:name", "Values": [name]}]
    assert ec2.describe_vpcs(Filters=tagged)["Vpcs"] == []
    assert ec2.describe_subnets(Filters=tagged)["Subnets"] == []
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups if g["GroupName"] != "default"] == []

    rds = deployment.aws("rds")
    assert rds.describe_db_instances()["DBInstances"] == []
    assert rds.describe_db_subnet_groups()["DBSubnetGroups"] == []
    parameter_groups = rds.describe_db_parameter_groups()["DBParameterGroups"]
    assert [g for g in parameter_groups if g["DBParameterGroupName"].startswith(name)] == []

    assert deployment.aws("s3").list_buckets()["Buckets"] == []
    assert deployment.aws("secretsmanager").list_secrets()["SecretList"] == []
    assert deployment.aws("ecr").describe_repositories()["repositories"] == []
    elbv2 = deployment.aws("elbv2")
    assert elbv2.describe_load_balancers()["LoadBalancers"] == []
    assert elbv2.describe_target_groups()["TargetGroups"] == []
    log_groups = deployment.aws("logs").describe_log_groups()["logGroups"]
    assert [g["logGroupName"] for g in log_groups if name in g["logGroupName"]] == []

    iam = deployment.aws("iam")
    roles = iam.list_roles()["Roles"]
    assert [r["RoleName"] for r in roles if r["RoleName"].startswith(name)] == []
    profiles = iam.list_instance_profiles()["InstanceProfiles"]
    assert [p for p in profiles if p["InstanceProfileName"].startswith(name)] == []

    kms = deployment.aws("kms")
    key_id = deployment.outputs["kms_key_arn"].rsplit("/", 1)[1]
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert f"alias/{name}" not in [a["AliasName"] for a in kms.list_aliases()["Aliases"]]


def test_boot_script_installs_a_daily_gc_timer_through_the_local_server(
    deployment: Deployment,
) -> None:
    """The timer starts `mlflow-stack gc` daily: the same image and env file as the server (its
    admin login and MLFLOW_STACK_GC_RETENTION_DAYS), on the host network to reach the server's
    published port, with the server container's hardening."""
    script = deployment.user_data()
    timer = re.search(r'^  cat >"\$GC_TIMER" <<EOF\n(?P<body>.*?)\nEOF$', script, re.M | re.S)
    unit = re.search(r'^  cat >"\$GC_UNIT" <<EOF\n(?P<body>.*?)\nEOF$', script, re.M | re.S)
    assert timer and unit, "the boot script writes no gc timer or service"
    assert "OnCalendar=daily" in timer["body"].splitlines()
    assert "Persistent=true" in timer["body"].splitlines()
    assert "Type=oneshot" in unit["body"].splitlines()
    run = re.search(r"^ExecStart=/usr/bin/docker run (.*?)$\Z", unit["body"], re.M | re.S)
    assert run, unit["body"]
    arguments = shlex.split(run[1].replace("\\\n", " "))
    assert arguments[-2:] == ["$IMAGE", "gc"]
    for flag in (["--env-file", "$ENV_FILE"], ["--network", "host"], ["--cap-drop", "ALL"]):
        index = arguments.index(flag[0])
        assert arguments[index : index + 2] == flag
    assert "no-new-privileges:true" in arguments
    assert "systemctl enable mlflow-stack.service mlflow-stack-gc.timer" in script
