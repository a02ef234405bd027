"""`terraform apply` and `terraform destroy` of the root configuration against a moto server on
loopback (provider endpoints pointed at it by an override file in a private copy).

What this proves: the configuration applies as a whole with the defaults users get, the parts
are wired together (the database admits the servers' security group, the Auto Scaling group's
servers are registered in the load balancer's target group, the role names this bucket and
these secrets, the env file names every setting with values the server accepts, every alarm
watches the right resource and notifies the topic), secure settings reach the API, no password
lands in the state, the boot script's `prepare` step writes a valid env file, a new image_tag
snapshots the database, rolls the servers and keeps the address, and destroy leaves nothing
behind (log groups included). What it cannot prove: that the AMI boots, that Docker runs the
image there, or that real AWS accepts every request the way moto does (moto does not evaluate
IAM or KMS key policies, and its instance refresh is our emulator extension:
tests/terraform/moto_launcher.py).

Two deployments (tests/terraform/emulator.py), the default and the HTTPS variant (with single
sign-on: the client secret reaches the app secret and the env file, never the state), are applied
side by side in the background while the other Terraform tests run; these tests then check both,
upgrade the default one and destroy both, in this order.
"""

from __future__ import annotations

import json
import re
import shlex
import stat
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.settings.contract import SERVE_SETTING_NAMES, Settings
from tests.terraform.conftest import shellcheck
from tests.terraform.emulator import (
    ALLOWED_CIDRS,
    DOMAIN,
    OIDC_CLIENT_ID,
    OIDC_CLIENT_SECRET,
    OIDC_ISSUER,
    VARIANTS,
    Deployment,
    Emulation,
)

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
    state = deployment.terraform.run("state", "list").stdout.splitlines()
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
        "aws_iam_service_linked_role.autoscaling[0]",
        "module.database.aws_db_snapshot.pre_migration[0]",
        "module.server.aws_launch_template.this",
        "module.server.aws_autoscaling_group.this",
        "module.server.aws_lb.this",
        "module.server.aws_ecr_repository.this[0]",
        "module.server.aws_secretsmanager_secret_version.app",
        "module.alarms.aws_sns_topic.this",
        "module.network.aws_vpc_endpoint.s3[0]",
        "terraform_data.rollout",
        *(
            ["module.network.aws_nat_gateway.this[0]", "module.network.aws_route.private_nat[0]"]
            if deployment.variant.egress == "nat"
            else ['module.network.aws_vpc_endpoint.interface["secretsmanager"]']
        ),
        *(
            [
                "module.server.aws_lb_listener.https[0]",
                "module.server.aws_lb_listener.http_redirect[0]",
                "module.server.aws_acm_certificate_validation.this[0]",
                "module.server.aws_route53_record.alias[0]",
            ]
            if deployment.variant.tls
            else ["module.server.aws_lb_listener.http[0]"]
        ),
    ):
        assert expected in managed, expected


def test_the_first_apply_leaves_the_new_group_on_its_first_version(
    deployment: Deployment,
) -> None:
    """The rollout runs on every apply that makes a launch template version; on the first one
    the group was just created on it, so there is nothing to refresh."""
    assert "roll-out: " + deployment.outputs["autoscaling_group_name"] in deployment.apply_output
    assert "already runs launch template version 1" in deployment.apply_output
    refreshes = deployment.aws("autoscaling").describe_instance_refreshes(
        AutoScalingGroupName=deployment.outputs["autoscaling_group_name"]
    )["InstanceRefreshes"]
    if deployment.variant.key == "https":  # the other one is upgraded later in this module
        assert refreshes == []


def test_servers_are_private_and_reach_aws_through_the_chosen_egress(
    deployment: Deployment,
) -> None:
    """The servers sit in the private subnets without public addresses, the load balancer alone
    in the public ones; the private subnets reach S3 through a gateway endpoint and the other
    APIs through the NAT gateway, or through interface endpoints without any route out."""
    ec2 = deployment.aws("ec2")
    vpc = [{"Name": "vpc-id", "Values": [deployment.outputs["vpc_id"]]}]
    subnets = ec2.describe_subnets(Filters=vpc)["Subnets"]
    tier = {
        s["SubnetId"]: {t["Key"]: t["Value"] for t in s.get("Tags", [])}["Tier"] for s in subnets
    }
    private = {subnet for subnet, name in tier.items() if name == "private"}
    group = deployment.group()
    assert set(group["VPCZoneIdentifier"].split(",")) == private
    for instance in deployment.instances():
        assert instance["SubnetId"] in private
        assert not instance.get("PublicIpAddress"), instance
    (interface,) = _template_data(deployment)["NetworkInterfaces"]
    assert interface["AssociatePublicIpAddress"] is False
    (balancer,) = deployment.aws("elbv2").describe_load_balancers(Names=[deployment.variant.name])[
        "LoadBalancers"
    ]
    assert {zone["SubnetId"] for zone in balancer["AvailabilityZones"]} == set(tier) - private

    (table,) = ec2.describe_route_tables(
        Filters=[*vpc, {"Name": "association.subnet-id", "Values": sorted(private)}]
    )["RouteTables"]
    default = [r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    endpoints = ec2.describe_vpc_endpoints(Filters=vpc)["VpcEndpoints"]
    (s3,) = [e for e in endpoints if e["VpcEndpointType"] == "Gateway"]
    assert s3["ServiceName"] == "com.amazonaws.us-east-1.s3"
    assert s3["RouteTableIds"] == [table["RouteTableId"]]
    interfaces = {
        e["ServiceName"].removeprefix("com.amazonaws.us-east-1."): e
        for e in endpoints
        if e["VpcEndpointType"] == "Interface"
    }
    if deployment.variant.egress == "nat":
        (route,) = default
        (nat,) = ec2.describe_nat_gateways(NatGatewayIds=[route["NatGatewayId"]])["NatGateways"]
        assert tier[nat["SubnetId"]] == "public"
        assert interfaces == {}
    else:
        assert default == []
        assert set(interfaces) == {
            "ecr.api", "ecr.dkr", "secretsmanager", "ssm", "ssmmessages", "ec2messages",
            "logs", "kms",
        }  # fmt: skip
        for endpoint in interfaces.values():
            assert endpoint["PrivateDnsEnabled"] is True
            assert set(endpoint["SubnetIds"]) == private


def test_outputs_are_not_empty(deployment: Deployment) -> None:
    for name in (
        "tracking_uri",
        "bucket_name",
        "database_endpoint",
        "admin_password_secret_arn",
        "database_secret_arn",
        "autoscaling_group_name",
        "target_group_arn",
        "alarm_topic_arn",
        "load_balancer_dns_name",
        "pre_migration_snapshot_id",
        "ecr_repository_url",
        "kms_key_arn",
    ):
        assert deployment.outputs.get(name), f"output {name} is empty"
    balancer = deployment.outputs["load_balancer_dns_name"]
    if deployment.variant.tls:
        assert deployment.outputs["tracking_uri"] == f"https://{DOMAIN}"
        assert deployment.outputs["auth_mode"] == "oidc"
        assert deployment.outputs["oidc_redirect_uri"] == f"https://{DOMAIN}/auth/callback"
    else:
        assert deployment.outputs["auth_mode"] == "basic"
        # The stable address: the load balancer, whatever servers run behind it.
        assert deployment.outputs["tracking_uri"] == f"http://{balancer}"
    assert deployment.outputs["admin_password_secret_arn"].startswith("arn:aws:secretsmanager:")
    assert sorted(deployment.outputs["database_log_groups"]) == [
        f"/aws/rds/instance/{deployment.variant.name}/postgresql",
        f"/aws/rds/instance/{deployment.variant.name}/upgrade",
    ]


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
    assert database["CACertificateIdentifier"] == "rds-ca-rsa2048-g1"  # the default users get
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
    (interface,) = _template_data(deployment)["NetworkInterfaces"]
    assert sorted(interface["Groups"]) == server_groups
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
    """Address ranges reach the load balancer's listeners only (80, and 443 with TLS); never
    0.0.0.0/0, never a server."""
    ec2 = deployment.aws("ec2")
    vpc_id = deployment.outputs["vpc_id"]
    groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
        "SecurityGroups"
    ]
    front = _groups_named(deployment, "alb")
    # The interface endpoints (server_egress = "endpoints") admit HTTPS from inside the VPC.
    endpoints = _groups_named(deployment, "endpoints")
    ports = {80, 443} if deployment.variant.tls else {80}
    opened: dict[int, set[str]] = {}
    for group in groups:
        for rule in group["IpPermissions"]:
            sources = _cidr_sources(rule)
            assert not {"0.0.0.0/0", "::/0"} & sources, (group["GroupName"], rule)
            if group["GroupId"] in endpoints:
                assert (rule["FromPort"], rule["ToPort"], sources) == (443, 443, {"10.42.0.0/16"})
            elif sources:
                assert group["GroupId"] in front, (group["GroupName"], rule)
                assert rule["FromPort"] == rule["ToPort"] and rule["FromPort"] in ports, rule
                opened.setdefault(rule["FromPort"], set()).update(sources)
    assert opened == {port: set(ALLOWED_CIDRS) for port in ports}
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


def test_servers_require_imdsv2_and_encrypt_their_root_volumes(deployment: Deployment) -> None:
    """What the launch template asks of every server (moto launches the group's instances from
    it, but does not carry every field over to them, so the template is read back)."""
    data = _template_data(deployment)
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpEndpoint"] == "enabled"
    assert int(data["MetadataOptions"]["HttpPutResponseHopLimit"]) == 2
    assert data["Monitoring"]["Enabled"] is True  # detailed monitoring: the default users get
    assert "KeyName" not in data
    (device,) = data["BlockDeviceMappings"]
    assert device["Ebs"]["Encrypted"] is True
    assert device["Ebs"]["KmsKeyId"] == deployment.outputs["kms_key_arn"]
    assert data["IamInstanceProfile"]["Arn"]
    for instance in deployment.instances():
        assert not instance.get("KeyName")


def test_server_role_uses_only_this_bucket_and_these_secrets(deployment: Deployment) -> None:
    iam = deployment.aws("iam")
    profile_name = _template_data(deployment)["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
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


def _template_data(deployment: Deployment) -> dict[str, Any]:
    """What the group's current launch template version gives every server. moto does not carry
    the instance profile, the security groups or the metadata options over to the instances it
    launches for a group, so the tests read them here, where Terraform wrote them."""
    template = deployment.group()["LaunchTemplate"]
    (version,) = deployment.aws("ec2").describe_launch_template_versions(
        LaunchTemplateId=template["LaunchTemplateId"], Versions=["$Latest"]
    )["LaunchTemplateVersions"]
    return dict(version["LaunchTemplateData"])


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def test_passwords_are_generated_and_never_in_the_state(deployment: Deployment) -> None:
    database = deployment.secret(deployment.outputs["database_secret_arn"])
    app = deployment.secret(deployment.outputs["admin_password_secret_arn"])
    generated = {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"}
    # With single sign-on (the HTTPS variant) the client secret given to Terraform is there too.
    client_secret = {"MLFLOW_STACK_OIDC_CLIENT_SECRET"} if deployment.variant.tls else set()
    assert set(app) == generated | client_secret
    assert database["username"] == "mlflow"
    assert f"{database['host']}:{database['port']}" == deployment.outputs["database_endpoint"]
    passwords = [database["password"], *(app[name] for name in sorted(generated))]
    for password in passwords:
        assert re.fullmatch(r"[A-Za-z0-9]{32,}", password)
    assert len(set(passwords)) == 3
    if client_secret:
        assert app["MLFLOW_STACK_OIDC_CLIENT_SECRET"] == OIDC_CLIENT_SECRET
        passwords.append(OIDC_CLIENT_SECRET)
    state = deployment.state_text()
    for password in passwords:
        assert password not in state
    user_data = deployment.user_data()
    for password in passwords:
        assert password not in user_data


def test_user_data_passes_shellcheck(deployment: Deployment, tmp_path: Path) -> None:
    script = tmp_path / "user_data.sh"
    script.write_text(deployment.user_data())
    result = shellcheck(script)
    assert result.returncode == 0, result.stdout


def test_env_file_names_exactly_the_settings(deployment: Deployment) -> None:
    match = _ENV_HEREDOC.search(deployment.user_data())
    assert match, "the boot script writes no env file"
    names = [line.split("=", 1)[0] for line in match["body"].splitlines()]
    assert len(names) == len(set(names)), "a setting is written twice"
    assert set(names) == SERVE_SETTING_NAMES, {
        "missing": sorted(SERVE_SETTING_NAMES - set(names)),
        "unknown": sorted(set(names) - SERVE_SETTING_NAMES),
    }


def test_boot_script_prepare_writes_a_valid_env_file(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Run the rendered script's `prepare` step with aws, curl, jq and docker stubbed: secrets
    come from moto, metadata from a server moto describes. The env file it writes must be
    private and parse as the server's settings."""
    boot = deployment.boot_prepare(tmp_path)
    result, env_file, env_dir = boot.result, boot.env_file, boot.env_file.parent
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(env_dir.stat().st_mode) == 0o700
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert set(values) == SERVE_SETTING_NAMES
    settings = Settings.from_env(values)  # raises ConfigError naming every bad value
    # No password in the env file: the server reads the database secret at each connection.
    assert settings.postgres_password == settings.postgres_password_file == ""
    assert settings.postgres_password_secret_arn == deployment.outputs["database_secret_arn"]
    assert deployment.secret(deployment.outputs["database_secret_arn"])["password"]
    assert (
        f"{settings.postgres_host}:{settings.postgres_port}"
        == (deployment.outputs["database_endpoint"])
    )
    assert settings.postgres_sslmode == "require"
    assert settings.artifacts_destination == f"s3://{deployment.outputs['bucket_name']}"
    assert settings.s3_endpoint_url == "" and settings.s3_access_key == ""
    assert (settings.host, settings.port) == ("0.0.0.0", 5000)
    # The names clients use, known before any server exists: the load balancer's (and the
    # domain's); the servers' own addresses are private, and private addresses are allowed.
    names = [deployment.outputs["load_balancer_dns_name"]]
    if deployment.variant.tls:
        names.insert(0, DOMAIN)
    assert settings.allowed_hosts == tuple(names)
    assert settings.trusted_proxies
    # Single sign-on in the HTTPS variant: the client secret read from the app secret (moto).
    if deployment.variant.tls:
        assert settings.auth_mode == "oidc"
        assert settings.public_url == f"https://{DOMAIN}"
        assert (settings.oidc_issuer, settings.oidc_client_id) == (OIDC_ISSUER, OIDC_CLIENT_ID)
        assert settings.oidc_client_secret == OIDC_CLIENT_SECRET
        assert settings.oidc_group_permissions == (("ml-team", "EDIT", "EDIT"),)
    else:
        assert settings.auth_mode == "basic"
        assert settings.public_url == settings.oidc_client_secret == ""
    logged = boot.calls.read_text()
    assert "docker login --username AWS --password-stdin 123456789012.dkr.ecr." in logged
    assert f"docker pull --quiet {deployment.outputs['image']}" in logged


def test_load_balancer_fronts_the_auto_scaling_group(deployment: Deployment) -> None:
    """Two servers of the group, both registered in the target group that the load balancer
    forwards to, health-checked on the process; the servers admit the load balancer only."""
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
    (target_group,) = elbv2.describe_target_groups()["TargetGroups"]
    assert target_group["TargetGroupArn"] == deployment.outputs["target_group_arn"]
    assert (target_group["Port"], target_group["Protocol"]) == (5000, "HTTP")
    assert target_group["HealthCheckPath"] == "/health/live"

    group = deployment.group()
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (2, 2, 4)
    assert group["HealthCheckType"] == "ELB"
    assert group["TargetGroupARNs"] == [target_group["TargetGroupArn"]]
    assert len(deployment.instance_ids) == 2
    targets = elbv2.describe_target_health(TargetGroupArn=target_group["TargetGroupArn"])
    registered = sorted(t["Target"]["Id"] for t in targets["TargetHealthDescriptions"])
    assert registered == deployment.instance_ids

    # The servers take the MLflow port from the load balancer's group and nothing else.
    (server_group,) = _groups_named(deployment, "server")
    (group_description,) = deployment.aws("ec2").describe_security_groups(GroupIds=[server_group])[
        "SecurityGroups"
    ]
    (rule,) = group_description["IpPermissions"]
    assert (rule["FromPort"], rule["ToPort"]) == (5000, 5000)
    assert [p["GroupId"] for p in rule["UserIdGroupPairs"]] == _groups_named(deployment, "alb")
    assert not _cidr_sources(rule)


def test_listeners(deployment: Deployment) -> None:
    """Plain HTTP forwards (the default); with TLS, HTTPS forwards and HTTP only redirects."""
    elbv2 = deployment.aws("elbv2")
    (balancer,) = elbv2.describe_load_balancers()["LoadBalancers"]
    listeners = {
        listener["Port"]: listener
        for listener in elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])[
            "Listeners"
        ]
    }
    target_group = deployment.outputs["target_group_arn"]
    if not deployment.variant.tls:
        assert set(listeners) == {80}
        (action,) = listeners[80]["DefaultActions"]
        assert (action["Type"], action["TargetGroupArn"]) == ("forward", target_group)
        return
    assert set(listeners) == {80, 443}
    https = listeners[443]
    assert https["Protocol"] == "HTTPS"
    assert https["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    (action,) = https["DefaultActions"]
    assert (action["Type"], action["TargetGroupArn"]) == ("forward", target_group)
    (redirect,) = listeners[80]["DefaultActions"]
    assert redirect["Type"] == "redirect"
    assert redirect["RedirectConfig"]["Protocol"] == "HTTPS"
    assert redirect["RedirectConfig"]["StatusCode"] == "HTTP_301"
    # TLS in one variable: a certificate for the domain, validated through the zone, and the
    # domain an alias of the load balancer.
    (certificate,) = [c["CertificateArn"] for c in https["Certificates"]]
    described = deployment.aws("acm").describe_certificate(CertificateArn=certificate)
    assert described["Certificate"]["DomainName"] == DOMAIN
    assert described["Certificate"]["Status"] == "ISSUED"
    (option,) = described["Certificate"]["DomainValidationOptions"]
    records = deployment.aws("route53").list_resource_record_sets(HostedZoneId=deployment.zone_id)[
        "ResourceRecordSets"
    ]
    by_name = {(r["Name"].rstrip("."), r["Type"]): r for r in records}
    validation = by_name[(option["ResourceRecord"]["Name"].rstrip("."), "CNAME")]
    assert validation["ResourceRecords"] == [{"Value": option["ResourceRecord"]["Value"]}]
    alias = by_name[(DOMAIN, "A")]["AliasTarget"]
    assert alias["DNSName"].rstrip(".").lower() == balancer["DNSName"].lower()
    assert alias["HostedZoneId"] == balancer["CanonicalHostedZoneId"]


def test_load_balancer_writes_access_logs_to_a_bucket_of_its_own(deployment: Deployment) -> None:
    """Evidence for incidents: every request in the access logs, in a bucket that ELB alone may
    write to, encrypted as ALB access logs require (SSE-S3), TLS only, expiring."""
    elbv2 = deployment.aws("elbv2")
    (balancer,) = elbv2.describe_load_balancers(Names=[deployment.variant.name])["LoadBalancers"]
    attributes = {
        a["Key"]: a["Value"]
        for a in elbv2.describe_load_balancer_attributes(
            LoadBalancerArn=balancer["LoadBalancerArn"]
        )["Attributes"]
    }
    bucket = deployment.outputs["access_logs_bucket"]
    assert attributes["access_logs.s3.enabled"] == "true"
    assert attributes["access_logs.s3.bucket"] == bucket
    assert attributes["access_logs.s3.prefix"] == "alb"
    s3 = deployment.aws("s3")
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()), block
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert any(r.get("Expiration", {}).get("Days") == 90 for r in rules), rules
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    writers = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert writers and all(
        s["Resource"].endswith("/alb/AWSLogs/123456789012/*") for s in writers
    ), writers


def test_every_alarm_notifies_the_topic_about_the_right_resource(deployment: Deployment) -> None:
    """Read back from CloudWatch: each alarm has the topic as its alarm and OK action, and the
    dimensions that name this stack's group, load balancer, target group or database."""
    alarms = deployment.aws("cloudwatch").describe_alarms()["MetricAlarms"]
    topic = deployment.outputs["alarm_topic_arn"]
    group = deployment.outputs["autoscaling_group_name"]
    (balancer,) = deployment.aws("elbv2").describe_load_balancers()["LoadBalancers"]
    balancer_suffix = balancer["LoadBalancerArn"].split(":loadbalancer/", 1)[1]
    target_suffix = deployment.outputs["target_group_arn"].rsplit(":", 1)[1]
    expected = {
        ("AWS/AutoScaling", "GroupInServiceInstances"): {"AutoScalingGroupName": group},
        ("AWS/EC2", "StatusCheckFailed"): {"AutoScalingGroupName": group},
        ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"): {"LoadBalancer": balancer_suffix},
        ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"): {
            "LoadBalancer": balancer_suffix,
            "TargetGroup": target_suffix,
        },
        ("AWS/ApplicationELB", "UnHealthyHostCount"): {
            "LoadBalancer": balancer_suffix,
            "TargetGroup": target_suffix,
        },
        ("AWS/RDS", "FreeStorageSpace"): {"DBInstanceIdentifier": deployment.variant.name},
        ("AWS/RDS", "FreeableMemory"): {"DBInstanceIdentifier": deployment.variant.name},
        ("AWS/RDS", "DatabaseConnections"): {"DBInstanceIdentifier": deployment.variant.name},
        ("AWS/RDS", "ReadLatency"): {"DBInstanceIdentifier": deployment.variant.name},
        ("AWS/RDS", "WriteLatency"): {"DBInstanceIdentifier": deployment.variant.name},
        ("AWS/RDS", "CPUUtilization"): {"DBInstanceIdentifier": deployment.variant.name},
        ("AWS/ApplicationELB", "TargetResponseTime"): {"LoadBalancer": balancer_suffix},
    }
    if deployment.variant.tls:
        (certificate,) = deployment.aws("acm").list_certificates()["CertificateSummaryList"]
        expected[("AWS/CertificateManager", "DaysToExpiry")] = {
            "CertificateArn": certificate["CertificateArn"]
        }
    found = {}
    rollout = [a for a in alarms if "-rollout-" in a["AlarmName"]]
    # The rollout's alarms roll an instance refresh back and notify nobody.
    assert sorted(a["AlarmName"] for a in rollout) == [
        f"{deployment.variant.name}-rollout-target-5xx",
        f"{deployment.variant.name}-rollout-unhealthy-hosts",
    ]
    assert all(a["AlarmActions"] == [] for a in rollout)
    for alarm in alarms:
        if alarm in rollout:
            continue
        assert alarm["AlarmActions"] == [topic], alarm["AlarmName"]
        assert alarm["OKActions"] == [topic], alarm["AlarmName"]
        dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        found[(alarm["Namespace"], alarm["MetricName"])] = dimensions
    for metric, dimensions in expected.items():
        assert found.get(metric) == dimensions, metric
    (described,) = [
        t for t in deployment.aws("sns").list_topics()["Topics"] if t["TopicArn"] == topic
    ]
    attributes = deployment.aws("sns").get_topic_attributes(TopicArn=described["TopicArn"])
    assert attributes["Attributes"]["KmsMasterKeyId"] == deployment.outputs["kms_key_arn"]


def test_database_log_groups_are_encrypted_and_expire(deployment: Deployment) -> None:
    logs = deployment.aws("logs")
    for name in deployment.outputs["database_log_groups"]:
        (group,) = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        assert group["logGroupName"] == name
        assert group["retentionInDays"] == 365
        assert group["kmsKeyId"] == deployment.outputs["kms_key_arn"]


def test_key_policy_lets_auto_scaling_encrypt_server_volumes(deployment: Deployment) -> None:
    key_id = deployment.outputs["kms_key_arn"].rsplit("/", 1)[1]
    policy = json.loads(
        deployment.aws("kms").get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
    )
    role = deployment.aws("iam").get_role(RoleName="AWSServiceRoleForAutoScaling")["Role"]
    granted = {
        action
        for statement in policy["Statement"]
        if statement["Principal"].get("AWS") == role["Arn"]
        for action in _as_list(statement["Action"])
    }
    assert {"kms:Decrypt", "kms:GenerateDataKey*", "kms:CreateGrant"} <= granted


# --- day 2: a new image ---

UPGRADE_TAG = "0.2.0"


def test_new_image_tag_snapshots_the_database_rolls_the_servers_and_keeps_the_address(
    deployments: dict[str, Deployment],
) -> None:
    """The upgrade users make: a new image_tag. The plan replaces nothing but the
    pre-migration snapshot; the launch template gets a new version, the group an instance
    refresh: every server is new, runs the new image and is registered in the target group,
    and tracking_uri does not change."""
    deployment = deployments["http"]
    before_uri = deployment.outputs["tracking_uri"]
    before_servers = deployment.instance_ids
    before_snapshot = deployment.outputs["pre_migration_snapshot_id"]
    plan = deployment.plan(f"-var=image_tag={UPGRADE_TAG}")
    changes = {
        change["address"]: change["change"]["actions"]
        for change in plan["resource_changes"]
        if change["change"]["actions"] != ["no-op"] and change["mode"] == "managed"
    }
    destroyed = {address for address, actions in changes.items() if "delete" in actions}
    assert destroyed == {
        "module.database.aws_db_snapshot.pre_migration[0]",
        "terraform_data.rollout",
    }, changes
    assert changes["module.database.aws_db_snapshot.pre_migration[0]"] == ["create", "delete"]
    assert changes["module.server.aws_launch_template.this"] == ["update"]
    # The group's launch template is left to the rollout's instance refresh (see the group's
    # ignore_changes): Terraform does not change it, so an auto rollback goes back to the old.
    assert "module.server.aws_autoscaling_group.this" not in changes
    assert changes["terraform_data.rollout"] == ["delete", "create"]
    # (moto never settles a few attributes, e.g. of the database and its parameter group, so
    # a plan there shows some in-place updates besides: what matters is that nothing else is
    # replaced or deleted, checked above.)

    seconds = deployment.apply_plan()
    print(f"upgrade apply of {deployment.variant.name}: {seconds:.0f} s")
    assert deployment.outputs["tracking_uri"] == before_uri
    assert deployment.outputs["image"].endswith(f":{UPGRADE_TAG}")
    snapshot = deployment.outputs["pre_migration_snapshot_id"]
    assert snapshot == f"{deployment.variant.name}-before-0-2-0" != before_snapshot
    snapshots = deployment.aws("rds").describe_db_snapshots(SnapshotType="manual")
    assert [s["DBSnapshotIdentifier"] for s in snapshots["DBSnapshots"]] == [snapshot]

    group = deployment.group()
    servers = deployment.instance_ids
    assert len(servers) == 2 and not set(servers) & set(before_servers)
    latest = str(group["LaunchTemplate"]["Version"])
    for instance in group["Instances"]:
        assert str(instance["LaunchTemplate"]["Version"]) in (latest, "$Latest"), instance
    refreshes = deployment.aws("autoscaling").describe_instance_refreshes(
        AutoScalingGroupName=group["AutoScalingGroupName"]
    )["InstanceRefreshes"]
    assert [r["Status"] for r in refreshes] == ["Successful"]
    # Started by terraform/scripts/roll-out.sh (the AWS CLI, at moto), which apply waited for:
    # the new version as the desired configuration, rolled back by AWS on failure or alarm.
    (refresh,) = refreshes
    assert refresh["DesiredConfiguration"]["LaunchTemplate"]["Version"] == latest
    preferences = refresh["Preferences"]
    assert preferences["AutoRollback"] is True
    assert preferences["MinHealthyPercentage"] == 100 and preferences["SkipMatching"] is True
    assert sorted(preferences["AlarmSpecification"]["Alarms"]) == [
        f"{deployment.variant.name}-rollout-target-5xx",
        f"{deployment.variant.name}-rollout-unhealthy-hosts",
    ]
    alarms = deployment.aws("cloudwatch").describe_alarms(
        AlarmNames=preferences["AlarmSpecification"]["Alarms"]
    )["MetricAlarms"]
    assert {a["MetricName"] for a in alarms} == {"HTTPCode_Target_5XX_Count", "UnHealthyHostCount"}
    group_name = group["AutoScalingGroupName"]
    assert f"roll-out: {group_name} runs launch template version {latest}" in (
        deployment.upgrade_output
    )
    targets = deployment.aws("elbv2").describe_target_health(
        TargetGroupArn=deployment.outputs["target_group_arn"]
    )
    assert sorted(t["Target"]["Id"] for t in targets["TargetHealthDescriptions"]) == servers
    script = deployment.user_data()
    assert f"mlflow-server:{UPGRADE_TAG}'" in script
    assert snapshot in script


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

    # Manual snapshots (the pre-migration one) go with the stack; automated backups are
    # retained after the instance on purpose (delete_automated_backups = false: a restore to a
    # point in time stays possible), and expire with their retention period.
    assert rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"] == []
    assert deployment.aws("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert ec2.describe_launch_templates()["LaunchTemplates"] == []
    assert deployment.aws("cloudwatch").describe_alarms()["MetricAlarms"] == []
    assert deployment.aws("sns").list_topics()["Topics"] == []
    assert deployment.aws("acm").list_certificates()["CertificateSummaryList"] == []
    assert deployment.aws("s3").list_buckets()["Buckets"] == []
    assert deployment.aws("secretsmanager").list_secrets()["SecretList"] == []
    assert deployment.aws("ecr").describe_repositories()["repositories"] == []
    elbv2 = deployment.aws("elbv2")
    assert elbv2.describe_load_balancers()["LoadBalancers"] == []
    assert elbv2.describe_target_groups()["TargetGroups"] == []
    # Every log group: the servers', the flow logs' and the database's (managed by Terraform).
    assert deployment.aws("logs").describe_log_groups()["logGroups"] == []

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
