#!/usr/bin/env bash
# Build the mlflow-server image and push it to the ECR repository of a deployed stack: the one
# step between `terraform apply` and running servers. Run from anywhere inside the repository:
#
#   terraform/scripts/push-image.sh            # the tag the stack runs (image_tag)
#   terraform/scripts/push-image.sh 0.2.0      # a new tag, before `terraform apply -var image_tag=0.2.0`
#
# Needs docker (with buildx for a Graviton stack), the AWS CLI v2 and credentials for the
# stack's account. Tags in the repository are immutable: a tag that is already there is left
# alone (the servers run it already).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TF_DIR=${MLFLOW_STACK_TERRAFORM_DIR:-$REPO_ROOT/terraform}
readonly REPO_ROOT TF_DIR

fail() {
  echo "push-image: $*" >&2
  exit 1
}

output() {
  terraform -chdir="$TF_DIR" output -raw "$1" 2>/dev/null ||
    fail "no output '$1' in $TF_DIR: run \`terraform apply\` there first"
}

image=$(output image)
region=$(output region)
# A null output is not stored: no repository means the stack runs an image of your own.
repository=$(terraform -chdir="$TF_DIR" output -raw ecr_repository_url 2>/dev/null || true)
[[ -n "$repository" ]] ||
  fail "the stack runs an image of your own (variable image): there is no repository to push to"
tag=${1:-${image##*:}}
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || fail "'$tag' is not a Docker tag"
image=$repository:$tag
architecture=$(output architecture)
case "$architecture" in
  x86_64) platform=linux/amd64 ;;
  arm64) platform=linux/arm64 ;;
  *) fail "unknown architecture '$architecture'" ;;
esac

if aws ecr describe-images --region "$region" --repository-name "${repository#*/}" \
  --image-ids "imageTag=$tag" >/dev/null 2>&1; then
  echo "push-image: $image is already in the repository (tags are immutable); nothing to do"
  exit 0
fi

aws ecr get-login-password --region "$region" |
  docker login --username AWS --password-stdin "${repository%%/*}"
docker build --platform "$platform" --file "$REPO_ROOT/mlflow-server/Dockerfile" \
  --tag "$image" "$REPO_ROOT"
docker push "$image"
echo "push-image: pushed $image; each server pulls it at its next start (within 30 s)"
