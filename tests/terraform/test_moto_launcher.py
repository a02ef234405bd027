"""The emulator extensions of tests/terraform/moto_launcher.py, against a launcher on loopback:
instance refreshes (boto3), the Auto Scaling fixes they rely on, and the RDS default CA."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.terraform.conftest import MotoServer, start_moto, stop_moto
from tests.terraform.moto_launcher import RDS_DEFAULT_CA, REFRESH_SECONDS_ENV

#: How long a refresh reports InProgress on the boto3 tests' launcher.
REFRESH_SECONDS = 2.0
AMI = "ami-1e749f67"  # one of moto's images (Ubuntu)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = start_moto(
        tmp_path_factory.mktemp("launcher"), **{REFRESH_SECONDS_ENV: str(REFRESH_SECONDS)}
    )
    yield server
    stop_moto(server)


def error_code(error: pytest.ExceptionInfo[Any]) -> str:
    return str(error.value.response["Error"]["Code"])


class Stack:
    """A VPC with one subnet, a launch template, a target group and a group of two attached."""

    def __init__(self, server: MotoServer, name: str) -> None:
        self.ec2: Any = server.client("ec2")
        self.asg: Any = server.client("autoscaling")
        self.elbv2: Any = server.client("elbv2")
        self.name = name
        vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = self.ec2.create_subnet(
            VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a"
        )["Subnet"]["SubnetId"]
        self.template_id = self.ec2.create_launch_template(
            LaunchTemplateName=name,
            LaunchTemplateData={
                "ImageId": AMI,
                "InstanceType": "t3.small",
                "UserData": user_data("v1"),
                "MetadataOptions": {"HttpTokens": "required"},
            },
        )["LaunchTemplate"]["LaunchTemplateId"]
        self.target_group = self.elbv2.create_target_group(
            Name=name, Protocol="HTTP", Port=5000, VpcId=vpc, TargetType="instance"
        )["TargetGroups"][0]["TargetGroupArn"]
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=name,
            MinSize=2,
            MaxSize=4,
            DesiredCapacity=2,
            VPCZoneIdentifier=subnet,
            LaunchTemplate={"LaunchTemplateId": self.template_id, "Version": "1"},
            TargetGroupARNs=[self.target_group],
            HealthCheckType="ELB",
        )

    def new_version(self, message: str) -> str:
        """A new launch template version (the way the AWS provider makes one: from a source
        version, with new user data); the group is pointed at it by number."""
        version = self.ec2.create_launch_template_version(
            LaunchTemplateId=self.template_id,
            SourceVersion="$Latest",
            LaunchTemplateData={"UserData": user_data(message)},
        )["LaunchTemplateVersion"]["VersionNumber"]
        self.asg.update_auto_scaling_group(
            AutoScalingGroupName=self.name,
            LaunchTemplate={"LaunchTemplateId": self.template_id, "Version": str(version)},
        )
        return str(version)

    def instances(self) -> dict[str, str]:
        """The group's instances and the launch template version each was launched from."""
        group = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.name])
        return {
            i["InstanceId"]: i["LaunchTemplate"]["Version"]
            for i in group["AutoScalingGroups"][0]["Instances"]
        }

    def targets(self) -> set[str]:
        health = self.elbv2.describe_target_health(TargetGroupArn=self.target_group)
        return {t["Target"]["Id"] for t in health["TargetHealthDescriptions"]}

    def refresh(self, refresh_id: str) -> dict[str, Any]:
        refreshes = self.asg.describe_instance_refreshes(
            AutoScalingGroupName=self.name, InstanceRefreshIds=[refresh_id]
        )["InstanceRefreshes"]
        assert len(refreshes) == 1
        return dict(refreshes[0])

    def finished(self, refresh_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 10 * REFRESH_SECONDS
        while (refresh := self.refresh(refresh_id))["Status"] == "InProgress":
            assert time.monotonic() < deadline, refresh
            time.sleep(0.1)
        return refresh

    def user_data(self, instance_id: str) -> str:
        attribute = self.ec2.describe_instance_attribute(
            InstanceId=instance_id, Attribute="userData"
        )
        return base64.b64decode(attribute["UserData"]["Value"]).decode()

    def state(self, instance_id: str) -> str:
        reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return str(reservations[0]["Instances"][0]["State"]["Name"])


def user_data(message: str) -> str:
    return base64.b64encode(f"#!/bin/bash\necho {message}\n".encode()).decode()


#: What the AWS provider sends for instance_refresh { strategy = "Rolling" preferences {...} }.
PROVIDER_PREFERENCES = {
    "MinHealthyPercentage": 100,
    "MaxHealthyPercentage": 200,
    "SkipMatching": True,
    "InstanceWarmup": 300,
    "AutoRollback": False,
    "ScaleInProtectedInstances": "Ignore",
    "StandbyInstances": "Ignore",
}


def test_a_refresh_replaces_the_instances_on_an_old_version(launcher: MotoServer) -> None:
    stack = Stack(launcher, "refresh")
    old = stack.instances()
    assert len(old) == 2
    assert set(old.values()) == {"1"}
    assert stack.targets() == set(old)

    version = stack.new_version("v2")
    started = stack.asg.start_instance_refresh(
        AutoScalingGroupName=stack.name, Strategy="Rolling", Preferences=PROVIDER_PREFERENCES
    )["InstanceRefreshId"]
    assert stack.refresh(started)["Status"] == "InProgress"
    # One active refresh per group: the provider cancels it and starts again on this error.
    with pytest.raises(stack.asg.exceptions.InstanceRefreshInProgressFault) as error:
        stack.asg.start_instance_refresh(AutoScalingGroupName=stack.name)
    assert error_code(error) == "InstanceRefreshInProgress"

    refresh = stack.finished(started)
    assert refresh["Status"] == "Successful"
    assert refresh["PercentageComplete"] == 100
    assert refresh["InstancesToUpdate"] == 0
    assert refresh["StartTime"] <= refresh["EndTime"]
    assert refresh["Strategy"] == "Rolling"
    assert refresh["Preferences"] == PROVIDER_PREFERENCES

    new = stack.instances()
    assert len(new) == 2  # the desired capacity
    assert not set(new) & set(old)
    assert set(new.values()) == {version}
    for instance_id in new:
        assert stack.user_data(instance_id) == "#!/bin/bash\necho v2\n"
        assert stack.state(instance_id) == "running"
    for instance_id in old:
        assert stack.state(instance_id) == "terminated"
    assert stack.targets() == set(new)
    described = stack.asg.describe_auto_scaling_instances(InstanceIds=list(new))
    assert {i["LaunchTemplate"]["Version"] for i in described["AutoScalingInstances"]} == {version}

    # Nothing is active any more: Cancel has nothing to cancel.
    with pytest.raises(stack.asg.exceptions.ActiveInstanceRefreshNotFoundFault) as error:
        stack.asg.cancel_instance_refresh(AutoScalingGroupName=stack.name)
    assert error_code(error) == "ActiveInstanceRefreshNotFound"

    # With SkipMatching, instances already on the group's version are kept.
    again = stack.asg.start_instance_refresh(
        AutoScalingGroupName=stack.name, Preferences={"SkipMatching": True}
    )["InstanceRefreshId"]
    assert stack.finished(again)["Status"] == "Successful"
    assert stack.instances() == new
    refreshes = stack.asg.describe_instance_refreshes(AutoScalingGroupName=stack.name)
    assert [r["InstanceRefreshId"] for r in refreshes["InstanceRefreshes"]] == [again, started]


def test_a_refresh_without_skip_matching_replaces_every_instance(launcher: MotoServer) -> None:
    stack = Stack(launcher, "replace-all")
    old = stack.instances()
    refresh_id = stack.asg.start_instance_refresh(AutoScalingGroupName=stack.name)[
        "InstanceRefreshId"
    ]
    refresh = stack.finished(refresh_id)
    assert refresh["Preferences"]["SkipMatching"] is False  # the AWS default, echoed
    new = stack.instances()
    assert len(new) == 2
    assert not set(new) & set(old)
    assert set(new.values()) == {"1"}
    assert stack.targets() == set(new)


def test_cancel_stops_the_active_refresh(launcher: MotoServer) -> None:
    stack = Stack(launcher, "cancel")
    stack.new_version("v2")
    started = stack.asg.start_instance_refresh(AutoScalingGroupName=stack.name)["InstanceRefreshId"]
    cancelled = stack.asg.cancel_instance_refresh(AutoScalingGroupName=stack.name)
    assert cancelled["InstanceRefreshId"] == started
    refresh = stack.refresh(started)
    assert refresh["Status"] == "Cancelled"
    assert "EndTime" in refresh
    # Another refresh may start now.
    restarted = stack.asg.start_instance_refresh(AutoScalingGroupName=stack.name)[
        "InstanceRefreshId"
    ]
    assert stack.finished(restarted)["Status"] == "Successful"


def test_scaling_in_deregisters_the_instances_that_leave(launcher: MotoServer) -> None:
    stack = Stack(launcher, "scale-in")
    before = stack.instances()
    stack.asg.update_auto_scaling_group(
        AutoScalingGroupName=stack.name, MinSize=1, DesiredCapacity=1
    )
    after = stack.instances()
    assert len(after) == 1
    assert set(after) < set(before)
    assert stack.targets() == set(after)
    stack.asg.update_auto_scaling_group(
        AutoScalingGroupName=stack.name, MinSize=0, MaxSize=0, DesiredCapacity=0
    )
    assert stack.targets() == set()


def test_the_group_keeps_its_default_instance_warmup(launcher: MotoServer) -> None:
    stack = Stack(launcher, "warmup")
    stack.asg.update_auto_scaling_group(AutoScalingGroupName=stack.name, DefaultInstanceWarmup=90)
    group = stack.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[stack.name])
    assert group["AutoScalingGroups"][0]["DefaultInstanceWarmup"] == 90


def test_refresh_errors_for_an_unknown_group(launcher: MotoServer) -> None:
    asg: Any = launcher.client("autoscaling")
    with pytest.raises(asg.exceptions.ClientError) as error:
        asg.start_instance_refresh(AutoScalingGroupName="no-such-group")
    assert error_code(error) == "ValidationError"


def test_rds_honours_the_ca_and_defaults_to_the_rds_default(launcher: MotoServer) -> None:
    rds: Any = launcher.client("rds")
    common = {
        "DBInstanceClass": "db.t4g.micro",
        "Engine": "postgres",
        "MasterUsername": "mlflow",
        "MasterUserPassword": "not-a-secret-1",
        "AllocatedStorage": 20,
    }
    created = rds.create_db_instance(
        DBInstanceIdentifier="chosen-ca", CACertificateIdentifier="rds-ca-rsa4096-g1", **common
    )
    assert created["DBInstance"]["CACertificateIdentifier"] == "rds-ca-rsa4096-g1"
    described = rds.describe_db_instances(DBInstanceIdentifier="chosen-ca")["DBInstances"][0]
    assert described["CACertificateIdentifier"] == "rds-ca-rsa4096-g1"
    # What the AWS provider sends: no CA (it compares the answer with ca_cert_identifier).
    created = rds.create_db_instance(DBInstanceIdentifier="default-ca", **common)
    assert created["DBInstance"]["CACertificateIdentifier"] == RDS_DEFAULT_CA == "rds-ca-rsa2048-g1"


def test_rds_keeps_performance_insights(launcher: MotoServer) -> None:
    rds: Any = launcher.client("rds")
    key = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    rds.create_db_instance(
        DBInstanceIdentifier="insights",
        DBInstanceClass="db.t4g.micro",
        Engine="postgres",
        MasterUsername="mlflow",
        MasterUserPassword="not-a-secret-1",
        AllocatedStorage=20,
        EnablePerformanceInsights=True,
        PerformanceInsightsKMSKeyId=key,
    )
    (described,) = rds.describe_db_instances(DBInstanceIdentifier="insights")["DBInstances"]
    assert described["PerformanceInsightsEnabled"] is True
    assert described["PerformanceInsightsKMSKeyId"] == key
    assert described["PerformanceInsightsRetentionPeriod"] == 7


# The AWS provider's side of a refresh (a new launch template version, StartInstanceRefresh,
# the wait) is exercised end to end by test_apply_moto.py's upgrade test.
