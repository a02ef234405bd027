#!/bin/sh
# MinIO's provisioning for the MLflow server: compose's one-shot minio-init service (image
# minio/mc) runs it on every `docker compose up`, before the mlflow service starts, with MinIO's
# root credentials. One line per step:
#
#   1. wait (at most MINIO_WAIT_SECONDS, default 60) until MinIO accepts the root credentials;
#   2. create the artifact bucket MLFLOW_STACK_S3_BUCKET unless it exists (its data is kept);
#   3. create or update the policy mlflow-stack-artifacts from bucket-policy.json: the objects
#      of that bucket and nothing else (no other bucket, no ListAllMyBuckets, no CreateBucket);
#   4. create the user MLFLOW_STACK_S3_ACCESS_KEY with the secret MLFLOW_STACK_S3_SECRET_KEY (or
#      set that secret on the existing user);
#   5. attach the policy to the user.
#
# Every step is idempotent: a rerun leaves what is already right alone and succeeds. The
# server signs with that user's key only; the root credentials stay in the minio and minio-init
# containers. See README.md beside this script.
set -eu

readonly ALIAS=stack POLICY=mlflow-stack-artifacts
here="$(cd "$(dirname "$0")" && pwd)"
url="${MINIO_URL:-http://minio:9000}"
bucket="${MLFLOW_STACK_S3_BUCKET:-mlflow}"
wait_seconds="${MINIO_WAIT_SECONDS:-60}"

step() { printf 'minio-init: %s\n' "$*"; }
fail() {
	printf 'minio-init: error: %s\n' "$*" >&2
	exit 1
}

# usage: quietly ARGS...: run `mc ARGS`, showing its output only when it fails.
quietly() {
	if ! output="$(mc "$@" 2>&1)"; then
		printf '%s\n' "$output" >&2
		return 1
	fi
}

# usage: required NAME VALUE
required() { [ -n "$2" ] || fail "$1 is not set (see .env.example)"; }
required MINIO_ROOT_USER "${MINIO_ROOT_USER:-}"
required MINIO_ROOT_PASSWORD "${MINIO_ROOT_PASSWORD:-}"
required MLFLOW_STACK_S3_ACCESS_KEY "${MLFLOW_STACK_S3_ACCESS_KEY:-}"
required MLFLOW_STACK_S3_SECRET_KEY "${MLFLOW_STACK_S3_SECRET_KEY:-}"
[ "$MLFLOW_STACK_S3_ACCESS_KEY" != "$MINIO_ROOT_USER" ] ||
	fail "MLFLOW_STACK_S3_ACCESS_KEY must differ from MINIO_ROOT_USER: the server gets a user of its own"
case "$bucket" in
	'' | *[!a-z0-9.-]*) fail "MLFLOW_STACK_S3_BUCKET=$bucket is not a valid bucket name" ;;
esac
case "$wait_seconds" in
	'' | *[!0-9]*) fail "MINIO_WAIT_SECONDS must be a whole number of seconds" ;;
esac

# 1. the alias (kept in MC_CONFIG_DIR, a tmpfs in compose), then wait for MinIO
quietly alias set --api S3v4 "$ALIAS" "$url" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" ||
	fail "cannot configure mc for $url"
waited=0
until output="$(mc ls "$ALIAS" 2>&1)"; do
	if [ "$waited" -ge "$wait_seconds" ]; then
		printf '%s\n' "$output" >&2
		fail "MinIO at $url did not accept MINIO_ROOT_USER/MINIO_ROOT_PASSWORD within ${wait_seconds}s"
	fi
	sleep 2
	waited=$((waited + 2))
done
step "MinIO at $url accepts the root credentials"

# 2. the bucket
quietly mb --ignore-existing "$ALIAS/$bucket" || fail "cannot create bucket $bucket"
step "bucket $bucket is there"

# 3. the policy, rendered for this bucket (the template's BUCKET)
rendered="${TMPDIR:-/tmp}/$POLICY.json"
sed "s|arn:aws:s3:::BUCKET|arn:aws:s3:::$bucket|g" "$here/bucket-policy.json" >"$rendered"
quietly admin policy create "$ALIAS" "$POLICY" "$rendered" || fail "cannot create policy $POLICY"
step "policy $POLICY allows bucket $bucket and nothing else"

# 4. the server's user
quietly admin user add "$ALIAS" "$MLFLOW_STACK_S3_ACCESS_KEY" "$MLFLOW_STACK_S3_SECRET_KEY" ||
	fail "cannot create user $MLFLOW_STACK_S3_ACCESS_KEY"
step "user $MLFLOW_STACK_S3_ACCESS_KEY has the secret MLFLOW_STACK_S3_SECRET_KEY"

# 5. its policy
quietly admin policy attach "$ALIAS" "$POLICY" --user "$MLFLOW_STACK_S3_ACCESS_KEY" ||
	fail "cannot attach policy $POLICY to user $MLFLOW_STACK_S3_ACCESS_KEY"
step "user $MLFLOW_STACK_S3_ACCESS_KEY has policy $POLICY: done"
