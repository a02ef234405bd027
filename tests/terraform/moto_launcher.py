"""moto_server with a few emulator extensions, for the Terraform tests.

Run as ``python -m tests.terraform.moto_launcher -H 127.0.0.1 -p PORT`` (from the repository root):
it patches moto in this process, then hands the arguments to moto's own server main. Everything
here is an EMULATOR EXTENSION: it fills gaps in moto 5.2.5 that the AWS provider runs into, each
patch small and modelled on the documented AWS behaviour (cited in its docstring), none of it
talking to AWS. Without the launcher, ``moto_server`` behaves exactly as shipped.

Patches:

* Auto Scaling instance refreshes: StartInstanceRefresh, DescribeInstanceRefreshes and
  CancelInstanceRefresh (moto answers "not implemented"). The AWS provider starts a refresh when
  an ``aws_autoscaling_group`` with an ``instance_refresh`` block gets a new launch template
  version. The refresh really replaces the group's instances, at once (see
  :func:`start_instance_refresh`).
* Auto Scaling groups launch from the launch template *version* the group names (moto passed no
  version, so RunInstances used the template's default version for the tags and the block
  devices), and report each instance's own version in DescribeAutoScalingGroups /
  DescribeAutoScalingInstances (moto reported the template's default version for all of them).
* Auto Scaling groups keep ``DefaultInstanceWarmup`` (moto dropped it, so every plan showed a
  change).
* Auto Scaling groups deregister the instances that left the group from the attached target
  groups (moto only ever registered them).
* EC2 CreateLaunchTemplateVersion keeps ``UserData`` as user data (moto stored the raw string, and
  a group launching from that version then failed with a 500) and honours ``SourceVersion``.
* RDS CreateDBInstance defaults the CA to ``rds-ca-rsa2048-g1`` like RDS does (moto:
  ``rds-ca-default``, which made the provider follow every create with a ModifyDBInstance), and
  keeps the Performance Insights settings (moto dropped them, so every later plan modified the
  instance again).

Knobs (environment):

* ``MOTO_LAUNCHER_INSTANCE_REFRESH_SECONDS`` (default ``0``): how long a refresh reports
  ``InProgress`` before ``Successful``. The instances are replaced when the refresh starts either
  way; a non-zero value lets a test see an active refresh (InstanceRefreshInProgress, Cancel).
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
from moto.autoscaling.models import (
    ASG_NAME_TAG,
    AutoScalingBackend,
    FakeAutoScalingGroup,
    InstanceState,
)
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.models.instances import Instance
from moto.ec2.responses.launch_templates import LaunchTemplates
from moto.ec2.utils import parse_user_data
from moto.moto_api._internal import mock_random
from moto.rds.models import RDSBackend

REFRESH_SECONDS_ENV = "MOTO_LAUNCHER_INSTANCE_REFRESH_SECONDS"

#: The CA that RDS gives a new DB instance when CreateDBInstance names none.
RDS_DEFAULT_CA = "rds-ca-rsa2048-g1"

#: Tags EC2 puts on an instance launched from a launch template (moto sets them too).
LAUNCH_TEMPLATE_ID_TAG = "aws:ec2launchtemplate:id"
LAUNCH_TEMPLATE_VERSION_TAG = "aws:ec2launchtemplate:version"

#: What DescribeInstanceRefreshes shows for preferences the request left out (AWS defaults).
DEFAULT_PREFERENCES: dict[str, Any] = {
    "MinHealthyPercentage": 90,
    "MaxHealthyPercentage": 100,
    "SkipMatching": False,
    "AutoRollback": False,
    "ScaleInProtectedInstances": "Ignore",
    "StandbyInstances": "Ignore",
}

#: Statuses in which a refresh blocks another one (and can be cancelled).
ACTIVE_STATUSES = frozenset({"Pending", "InProgress", "Cancelling", "Baking"})

_LOCK = threading.RLock()  # moto_server answers requests in threads
_installed = False


# --- Auto Scaling: instance refreshes ---


class InstanceRefreshInProgressError(AutoscalingClientError):
    """AWS error of StartInstanceRefresh while another refresh of the group is active."""

    code = "InstanceRefreshInProgress"
    message = (
        "An Instance Refresh is already in progress and blocks the execution of this "
        "Instance Refresh."
    )


class ActiveInstanceRefreshNotFoundError(AutoscalingClientError):
    """AWS error of CancelInstanceRefresh when the group has no active refresh."""

    code = "ActiveInstanceRefreshNotFound"

    def __init__(self, group_name: str) -> None:
        super().__init__(
            f"No in progress or pending Instance Refresh found for Auto Scaling group {group_name}"
        )


@dataclass
class InstanceRefresh:
    """One instance refresh of a group, as DescribeInstanceRefreshes shows it."""

    group_name: str
    strategy: str
    preferences: dict[str, Any]
    desired_configuration: dict[str, Any]
    instances_replaced: int
    seconds: float  # how long it reports InProgress
    refresh_id: str = field(default_factory=lambda: str(mock_random.uuid4()))
    start_time: datetime = field(default_factory=utcnow)
    cancelled_at: datetime | None = None

    @property
    def end_time(self) -> datetime | None:
        if self.cancelled_at is not None:
            return self.cancelled_at
        done = self.start_time + timedelta(seconds=self.seconds)
        return done if utcnow() >= done else None

    @property
    def status(self) -> str:
        if self.cancelled_at is not None:
            return "Cancelled"
        return "Successful" if self.end_time is not None else "InProgress"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def percentage_complete(self) -> int:
        if self.status == "Successful":
            return 100
        end = self.cancelled_at or utcnow()
        elapsed = (end - self.start_time).total_seconds()
        return min(99, int(100 * elapsed / self.seconds)) if self.seconds > 0 else 99

    def describe(self) -> dict[str, Any]:
        """The InstanceRefresh structure of the Auto Scaling API."""
        percentage = self.percentage_complete()
        to_update = self.instances_replaced - self.instances_replaced * percentage // 100
        result: dict[str, Any] = {
            "InstanceRefreshId": self.refresh_id,
            "AutoScalingGroupName": self.group_name,
            "Status": self.status,
            "StartTime": self.start_time,
            "EndTime": self.end_time,
            "PercentageComplete": percentage,
            "InstancesToUpdate": to_update,
            "ProgressDetails": {
                "LivePoolProgress": {
                    "PercentageComplete": percentage,
                    "InstancesToUpdate": to_update,
                }
            },
            "Preferences": self.preferences,
            "Strategy": self.strategy,
        }
        if self.desired_configuration:
            result["DesiredConfiguration"] = self.desired_configuration
        return {key: value for key, value in result.items() if value is not None}


def _refreshes(backend: AutoScalingBackend) -> dict[str, list[InstanceRefresh]]:
    """The refreshes of each group of a backend, newest first (kept on the backend, so that
    moto's reset forgets them with everything else)."""
    store: dict[str, list[InstanceRefresh]] = backend.__dict__.setdefault(
        "_launcher_instance_refreshes", {}
    )
    return store


def _group(backend: AutoScalingBackend, name: str) -> FakeAutoScalingGroup:
    group = backend.autoscaling_groups.get(name)
    if group is None:
        raise ValidationError(
            f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found"
        )
    return group


def _launched_from(instance: Instance) -> tuple[str | None, int | None]:
    """The launch template id and version an instance was launched from (EC2 tags it)."""
    tags = instance.ec2_backend.tags.get(instance.id, {})
    version = tags.get(LAUNCH_TEMPLATE_VERSION_TAG)
    return tags.get(LAUNCH_TEMPLATE_ID_TAG), int(version) if version else None


def _group_version(group: FakeAutoScalingGroup) -> int | None:
    """The version number the group's launch template specification resolves to now."""
    template = group.ec2_launch_template
    if template is None:
        return None
    return int(template.get_version(group.launch_template_version).number)


def _replace_instances(
    backend: AutoScalingBackend, group: FakeAutoScalingGroup, preferences: dict[str, Any]
) -> int:
    """Replace the group's InService instances (all at once): deregister them from the attached
    load balancers and target groups, terminate them, launch as many from the group's current
    launch template version (or launch configuration) and register those. Like AWS:

    * ``SkipMatching``: instances already on the group's launch template version are kept;
    * ``ScaleInProtectedInstances``: protected instances are kept unless it is ``Refresh``;
    * instances in Standby are left alone (``StandbyInstances`` ``Ignore``).

    Returns how many instances were replaced."""
    template = group.ec2_launch_template
    version = _group_version(group)
    skip_matching = bool(preferences.get("SkipMatching"))
    replace_protected = preferences.get("ScaleInProtectedInstances") == "Refresh"

    def matches(state: InstanceState) -> bool:
        template_id, launched_version = _launched_from(state.instance)
        return template is not None and (template_id, launched_version) == (template.id, version)

    old = [
        state
        for state in group.instance_states
        if state.lifecycle_state == "InService"
        and (replace_protected or not state.protected_from_scale_in)
        and not (skip_matching and matches(state))
    ]
    if not old:
        return 0
    old_ids = {state.instance.id for state in old}
    group.instance_states = [s for s in group.instance_states if s.instance.id not in old_ids]
    backend.update_attached_elbs(group.name)
    backend.update_attached_target_groups(group.name)  # deregisters the old ones (patched)
    backend.ec2_backend.terminate_instances(sorted(old_ids))
    group.replace_autoscaling_group_instances(len(old), group.get_propagated_tags())
    backend.update_attached_elbs(group.name)
    backend.update_attached_target_groups(group.name)
    return len(old)


def start_instance_refresh(
    backend: AutoScalingBackend,
    group_name: str,
    strategy: str | None,
    preferences: dict[str, Any] | None,
    desired_configuration: dict[str, Any] | None,
) -> InstanceRefresh:
    """StartInstanceRefresh (emulated).

    AWS: "Starts an instance refresh ... replaces instances in an Auto Scaling group" to apply
    the group's current launch template (or the ``DesiredConfiguration``, which becomes the
    group's configuration); only one refresh per group may be active, another start fails with
    ``InstanceRefreshInProgress``; ``Strategy`` is ``Rolling`` (the default); ``AutoRollback``
    needs a ``DesiredConfiguration``. API reference: StartInstanceRefresh, RefreshPreferences.

    Emulation: the instances are replaced during the call (see :func:`_replace_instances`); the
    refresh then reports ``InProgress`` for ``MOTO_LAUNCHER_INSTANCE_REFRESH_SECONDS`` (default
    0) and ``Successful`` after. Warm-up, checkpoints, alarms and health percentages only echo."""
    with _LOCK:
        group = _group(backend, group_name)
        history = _refreshes(backend).setdefault(group_name, [])
        if any(refresh.active for refresh in history):
            raise InstanceRefreshInProgressError()
        strategy = strategy or "Rolling"
        if strategy != "Rolling":
            raise ValidationError(
                f"The emulator supports only the Rolling strategy, not {strategy}"
            )
        wanted = {**DEFAULT_PREFERENCES, **(preferences or {})}
        desired = desired_configuration or {}
        if wanted.get("AutoRollback") and not desired:
            raise ValidationError(
                "The AutoRollback parameter cannot be set to true when the DesiredConfiguration "
                "parameter is empty"
            )
        if desired.get("LaunchTemplate") or desired.get("MixedInstancesPolicy"):
            if desired.get("MixedInstancesPolicy"):
                group.mixed_instances_policy = desired["MixedInstancesPolicy"]
            group._set_launch_configuration(
                "", desired.get("LaunchTemplate") or {}, desired.get("MixedInstancesPolicy")
            )
        replaced = _replace_instances(backend, group, wanted)
        seconds = float(os.environ.get(REFRESH_SECONDS_ENV) or 0)
        refresh = InstanceRefresh(group_name, strategy, wanted, desired, replaced, seconds)
        history.insert(0, refresh)
        return refresh


def describe_instance_refreshes(
    backend: AutoScalingBackend, group_name: str, refresh_ids: list[str]
) -> list[InstanceRefresh]:
    """DescribeInstanceRefreshes (emulated). AWS: the refreshes of a group, newest first,
    optionally only the given ``InstanceRefreshIds``."""
    with _LOCK:
        _group(backend, group_name)
        history = _refreshes(backend).get(group_name, [])
        return [r for r in history if not refresh_ids or r.refresh_id in refresh_ids]


def cancel_instance_refresh(backend: AutoScalingBackend, group_name: str) -> InstanceRefresh:
    """CancelInstanceRefresh (emulated). AWS: cancels the group's active refresh ("instances
    that have already been replaced are not rolled back"); ``ActiveInstanceRefreshNotFound``
    when there is none. Emulation: it goes to ``Cancelled`` at once (AWS: via ``Cancelling``)."""
    with _LOCK:
        _group(backend, group_name)
        active = [r for r in _refreshes(backend).get(group_name, []) if r.active]
        if not active:
            raise ActiveInstanceRefreshNotFoundError(group_name)
        active[0].cancelled_at = utcnow()
        return active[0]


def _response_start_instance_refresh(self: AutoScalingResponse) -> ActionResult:
    refresh = start_instance_refresh(
        self.autoscaling_backend,
        self._get_param("AutoScalingGroupName"),
        strategy=self._get_param("Strategy"),
        preferences=self._get_param("Preferences"),
        desired_configuration=self._get_param("DesiredConfiguration"),
    )
    return ActionResult({"InstanceRefreshId": refresh.refresh_id})


def _response_describe_instance_refreshes(self: AutoScalingResponse) -> ActionResult:
    refreshes = describe_instance_refreshes(
        self.autoscaling_backend,
        self._get_param("AutoScalingGroupName"),
        self._get_param("InstanceRefreshIds", []),
    )
    ids = [refresh.refresh_id for refresh in refreshes]
    token = self._get_param("NextToken")
    start = ids.index(token) + 1 if token in ids else 0
    max_records = min(self._get_int_param("MaxRecords") or 50, 100)
    page = refreshes[start : start + max_records]
    next_token = page[-1].refresh_id if len(refreshes) > start + max_records else None
    return ActionResult(
        {"InstanceRefreshes": [refresh.describe() for refresh in page], "NextToken": next_token}
    )


def _response_cancel_instance_refresh(self: AutoScalingResponse) -> ActionResult:
    refresh = cancel_instance_refresh(
        self.autoscaling_backend, self._get_param("AutoScalingGroupName")
    )
    return ActionResult({"InstanceRefreshId": refresh.refresh_id})


# --- Auto Scaling: launches, instance versions, target groups ---


def _replace_autoscaling_group_instances(
    self: FakeAutoScalingGroup, count_needed: int, propagated_tags: dict[str, str]
) -> None:
    """Launch ``count_needed`` instances for the group, from the launch template version the
    group names. AWS: a group's ``LaunchTemplate.Version`` (a number, ``$Latest`` or
    ``$Default``, the default when left out) picks the version its launches use
    (LaunchTemplateSpecification), and EC2 tags the instances with it
    (``aws:ec2launchtemplate:version``). moto 5.2.5 took the image, type and user data from that
    version but passed no version to RunInstances, so tags and block devices came from the
    default version. This is moto's method with the version passed on."""
    propagated_tags[ASG_NAME_TAG] = self.name
    propagated_tags.update(self.instance_tags)
    subnet_id = self.vpc_zone_identifier.split(",")[0] if self.vpc_zone_identifier else None
    associate_public_ip = (
        self.launch_config.associate_public_ip_address if self.launch_config else None
    )
    launch_template = None
    if self.ec2_launch_template is not None:
        launch_template = {
            "LaunchTemplateId": self.ec2_launch_template.id,
            "Version": str(_group_version(self)),
        }
    reservation = self.autoscaling_backend.ec2_backend.run_instances(
        self.image_id,
        count_needed,
        self.user_data,
        self.security_groups,
        instance_type=self.instance_type,
        tags={"instance": propagated_tags},
        placement=mock_random.choice(self.availability_zones),
        launch_config=self.launch_config,
        launch_template=launch_template,
        is_instance_type_default=False,
        associate_public_ip=associate_public_ip,
        subnet_id=subnet_id,
    )
    for instance in reservation.instances:
        instance.autoscaling_group = self  # type: ignore[attr-defined]
        self.instance_states.append(
            InstanceState(
                instance, protected_from_scale_in=self.new_instances_protected_from_scale_in
            )
        )


def _instance_launch_template(self: InstanceState) -> dict[str, Any] | None:
    """The launch template an instance of a group was launched from, as DescribeAutoScalingGroups
    (``Instances[].LaunchTemplate``) and DescribeAutoScalingInstances show it: AWS reports each
    instance's own version (that is how a refresh's progress shows). moto reported the
    template's default version for every instance."""
    group = self.auto_scaling_group
    template = group.ec2_launch_template if group is not None else None
    if template is None:
        return None
    template_id, version = _launched_from(self.instance)
    if template_id and template_id != template.id:
        template = group.ec2_backend.launch_templates.get(template_id, template)
    return {
        "LaunchTemplateId": template.id,
        "LaunchTemplateName": template.name,
        "Version": str(version or template.default_version_number),
    }


def _keeping_default_instance_warmup(original: Any) -> Any:
    """Wrap Create/UpdateAutoScalingGroup so that the group keeps ``DefaultInstanceWarmup``.
    AWS: the group's default instance warm-up in seconds, shown by DescribeAutoScalingGroups;
    "to remove a value that you previously set, include the property but specify -1"
    (CreateAutoScalingGroup, UpdateAutoScalingGroup). moto ignored it, so the AWS provider saw
    ``default_instance_warmup`` unset after every apply and planned it again."""

    def method(self: AutoScalingResponse) -> ActionResult:
        result: ActionResult = original(self)
        warmup = self._get_int_param("DefaultInstanceWarmup")
        group = self.autoscaling_backend.autoscaling_groups.get(
            self._get_param("AutoScalingGroupName")
        )
        if warmup is not None and group is not None:
            group.default_instance_warmup = None if warmup == -1 else warmup  # type: ignore[attr-defined]
        return result

    method.__name__ = original.__name__
    method.__doc__ = original.__doc__
    return method


_original_update_attached_target_groups = AutoScalingBackend.update_attached_target_groups


def _update_attached_target_groups(self: AutoScalingBackend, group_name: str) -> None:
    """Register the group's instances with its target groups (moto) and deregister the instances
    that left the group. AWS: "When an instance is terminated or detached, Amazon EC2 Auto
    Scaling deregisters it from the target groups" (Elastic Load Balancing and Amazon EC2 Auto
    Scaling, User Guide). moto only registered, so terminated instances stayed "healthy"
    targets after a scale-in or a drain."""
    _original_update_attached_target_groups(self, group_name)
    group = self.autoscaling_groups[group_name]
    members = {state.instance.id for state in group.instance_states}
    for arn in group.target_group_arns:
        target_group = self.elbv2_backend.target_groups.get(arn)
        if target_group is None:
            continue
        gone = [
            target
            for target_id, target in target_group.targets.items()
            if target_id not in members
            and getattr(self.ec2_backend.get_instance_by_id(target_id), "autoscaling_group", None)
            is group
        ]
        if gone:
            target_group.deregister(gone)


_original_delete_auto_scaling_group = AutoScalingBackend.delete_auto_scaling_group


def _delete_auto_scaling_group(self: AutoScalingBackend, group_name: str) -> None:
    """Delete the group (moto) and its refresh history (AWS deletes a group with its refreshes,
    so a new group of the same name starts without any)."""
    _original_delete_auto_scaling_group(self, group_name)
    with _LOCK:
        _refreshes(self).pop(group_name, None)


# --- EC2: launch template versions ---


def _create_launch_template_version(self: LaunchTemplates) -> ActionResult:
    """CreateLaunchTemplateVersion. AWS: the version's ``LaunchTemplateData`` has the same form
    as CreateLaunchTemplate's (``UserData`` base64-encoded); with ``SourceVersion`` the new
    version "inherits the same launch parameters as the source version, except for parameters
    that you specify in LaunchTemplateData" (API reference). moto 5.2.5 kept ``UserData`` as a
    plain string here (CreateLaunchTemplate wraps it as user data), so an Auto Scaling group
    launching from such a version failed an assertion (HTTP 500), and it ignored
    ``SourceVersion``. This is moto's method with both handled."""
    name = self._get_param("LaunchTemplateName")
    template_id = self._get_param("LaunchTemplateId")
    if template_id:
        template = self.ec2_backend.get_launch_template(template_id)
    else:
        template = self.ec2_backend.get_launch_template_by_name(name)
    data = dict(self._get_param("LaunchTemplateData", {}))
    if "UserData" in data:
        data["UserData"] = parse_user_data(self._get_param("LaunchTemplateData.UserData"))
    source = self._get_param("SourceVersion")
    if source:
        data = {**template.get_version(source).data, **data}
    self.error_on_dryrun()
    version = template.create_version(data, self._get_param("VersionDescription"))
    return ActionResult(
        {
            "LaunchTemplateVersion": {
                "CreateTime": version.create_time,
                "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
                "DefaultVersion": template.is_default(version),
                "LaunchTemplateData": version.data,
                "LaunchTemplateId": template.id,
                "LaunchTemplateName": template.name,
                "VersionDescription": version.description,
                "VersionNumber": version.number,
            }
        }
    )


# --- RDS ---

_original_create_db_instance = RDSBackend.create_db_instance


def _create_db_instance(self: RDSBackend, db_kwargs: dict[str, Any]) -> Any:
    """CreateDBInstance with RDS's default CA. AWS: "If you don't specify a CA when you create a
    DB instance, RDS uses the rds-ca-rsa2048-g1 CA" (Amazon RDS User Guide, Using SSL/TLS to
    encrypt a connection, Certificate authorities; the default since January 2024). moto used
    ``rds-ca-default``, not a real CA. The AWS provider does not send ``ca_cert_identifier`` in
    CreateDBInstance but compares the answer with it and follows up with a ModifyDBInstance
    (and a second wait for the instance) when they differ; with the real default they match.
    A CACertificateIdentifier in the request is honoured as before."""
    if not db_kwargs.get("ca_certificate_identifier"):
        db_kwargs = {**db_kwargs, "ca_certificate_identifier": RDS_DEFAULT_CA}
    instance = _original_create_db_instance(self, db_kwargs)
    _keep_performance_insights(instance, db_kwargs)
    return instance


def _keep_performance_insights(instance: Any, db_kwargs: dict[str, Any]) -> None:
    """CreateDBInstance keeps EnablePerformanceInsights, PerformanceInsightsKMSKeyId and
    PerformanceInsightsRetentionPeriod (moto dropped them, so the next plan turned Performance
    Insights on again: a ModifyDBInstance and an 80 s wait). AWS: the retention defaults to 7
    days (Amazon RDS API Reference, CreateDBInstance, PerformanceInsightsRetentionPeriod)."""
    if db_kwargs.get("enable_performance_insights"):
        instance.performance_insights_enabled = True
        instance.performance_insights_kms_key_id = db_kwargs.get("performance_insights_kms_key_id")
        instance.performance_insights_retention_period = (
            db_kwargs.get("performance_insights_retention_period") or 7
        )


# --- installation ---


def install() -> None:
    """Apply the patches to moto in this process (idempotent)."""
    global _installed  # noqa: PLW0603 - patch once per process
    with _LOCK:
        if _installed:
            return
        responses: Any = AutoScalingResponse
        responses.start_instance_refresh = _response_start_instance_refresh
        responses.describe_instance_refreshes = _response_describe_instance_refreshes
        responses.cancel_instance_refresh = _response_cancel_instance_refresh
        for name in ("create_auto_scaling_group", "update_auto_scaling_group"):
            setattr(responses, name, _keeping_default_instance_warmup(getattr(responses, name)))
        groups: Any = FakeAutoScalingGroup
        groups.replace_autoscaling_group_instances = _replace_autoscaling_group_instances
        states: Any = InstanceState
        states.launch_template = property(_instance_launch_template)
        backend: Any = AutoScalingBackend
        backend.update_attached_target_groups = _update_attached_target_groups
        backend.delete_auto_scaling_group = _delete_auto_scaling_group
        templates: Any = LaunchTemplates
        templates.create_launch_template_version = _create_launch_template_version
        rds: Any = RDSBackend
        rds.create_db_instance = _create_db_instance
        _installed = True


def main(argv: list[str] | None = None) -> None:
    """Patch moto, then run moto's server with the given arguments (``-H HOST -p PORT`` ...)."""
    install()
    from moto.server import main as moto_server_main

    moto_server_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
