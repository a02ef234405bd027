#!/usr/bin/env bash
# Roll the servers' Auto Scaling group onto a launch template version and wait for the end:
# `terraform apply` runs this (terraform_data.rollout in ../main.tf) for every new version, so
# that an image or a setting that does not come up fails the apply, with AWS's reason, while
# the old servers keep serving.
#
# The instance refresh names the version as its desired configuration, which AWS saves on the
# group only when the refresh succeeds; with auto rollback and the rollout alarms, a refresh
# whose new servers fail their health checks, or during which an alarm fires, puts the old
# servers back on the group's saved version by itself.
#
# Environment (from the server module's `rollout` output): GROUP, REGION, LAUNCH_TEMPLATE_ID,
# VERSION, DESIRED_CONFIGURATION and PREFERENCES (JSON for StartInstanceRefresh),
# TIMEOUT_SECONDS; POLL_SECONDS (default 15). Needs the AWS CLI and the credentials Terraform
# uses.
set -euo pipefail

fail() {
  echo "roll-out: $*" >&2
  exit 1
}

for name in GROUP REGION LAUNCH_TEMPLATE_ID VERSION DESIRED_CONFIGURATION PREFERENCES TIMEOUT_SECONDS; do
  [[ -n "${!name:-}" ]] || fail "$name is not set (this script is run by terraform apply)"
done
POLL_SECONDS=${POLL_SECONDS:-15}
command -v aws >/dev/null ||
  fail "needs the AWS CLI on the machine that runs terraform apply (see terraform/README.md, Prerequisites)"

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

one_line() {
  tr '\n' ' ' <"$1" | sed -e 's/  */ /g' -e 's/ $//'
}

# aws autoscaling COMMAND ARGS..., in this region, as text.
autoscaling() {
  aws autoscaling "$1" --region "$REGION" --output text "${@:2}" 2>"$SCRATCH/error"
}

saved=$(autoscaling describe-auto-scaling-groups --auto-scaling-group-names "$GROUP" \
  --query 'AutoScalingGroups[0].LaunchTemplate.Version') ||
  fail "cannot describe the Auto Scaling group $GROUP: $(one_line "$SCRATCH/error")"
if [[ "$saved" == "$VERSION" ]]; then
  # The group was created on this version (the first apply), or a refresh onto it succeeded.
  echo "roll-out: $GROUP already runs launch template version $VERSION"
  exit 0
fi

if ! id=$(autoscaling start-instance-refresh --auto-scaling-group-name "$GROUP" --strategy Rolling \
  --desired-configuration "$DESIRED_CONFIGURATION" --preferences "$PREFERENCES" \
  --query InstanceRefreshId); then
  if grep -q InstanceRefreshInProgress "$SCRATCH/error"; then
    fail "another instance refresh of $GROUP is in progress: wait for it to end (aws autoscaling describe-instance-refreshes --region $REGION --auto-scaling-group-name $GROUP), or cancel it (aws autoscaling cancel-instance-refresh ...), then apply again"
  fi
  fail "cannot start an instance refresh of $GROUP: $(one_line "$SCRATCH/error")"
fi
echo "roll-out: instance refresh $id of $GROUP: launch template version $saved -> $VERSION (auto rollback on)"

deadline=$((SECONDS + TIMEOUT_SECONDS))
while :; do
  if ! read -r status percent reason < <(autoscaling describe-instance-refreshes \
    --auto-scaling-group-name "$GROUP" --instance-refresh-ids "$id" \
    --query 'InstanceRefreshes[0].[Status, PercentageComplete, StatusReason]'); then
    fail "cannot follow the instance refresh $id of $GROUP: $(one_line "$SCRATCH/error")"
  fi
  [[ "$reason" == "None" ]] && reason="no reason given"
  case "$status" in
  Successful)
    echo "roll-out: $GROUP runs launch template version $VERSION"
    exit 0
    ;;
  RollbackSuccessful)
    fail "the new servers (launch template version $VERSION) did not become healthy, and the refresh rolled back: the servers run version $saved again. AWS says: $reason. Look at a new server's <instance-id>/journal log stream (terraform/README.md, Logs), fix the image or the settings, and apply again"
    ;;
  Failed | Cancelled | RollbackFailed)
    fail "the instance refresh $id of $GROUP ended $status: $reason. The group's servers may run versions $saved and $VERSION side by side: see aws autoscaling describe-instance-refreshes --region $REGION --auto-scaling-group-name $GROUP"
    ;;
  esac
  if ((SECONDS >= deadline)); then
    fail "the instance refresh $id of $GROUP is still $status ($percent % done) after $TIMEOUT_SECONDS s; it goes on without Terraform (and rolls back by itself if it fails): follow it with aws autoscaling describe-instance-refreshes --region $REGION --auto-scaling-group-name $GROUP, then apply again"
  fi
  echo "roll-out: $status, $percent % done"
  sleep "$POLL_SECONDS"
done
