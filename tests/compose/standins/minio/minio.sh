#!/usr/bin/env bash
# `minio` of the TEST STAND-IN for minio/minio (see the Dockerfile beside it): installed as
# /usr/bin/minio. `minio server DIR` serves S3 with SeaweedFS (`weed mini`) instead of MinIO.
#
#   - the root credentials are MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (MinIO's defaults
#     minioadmin:minioadmin, with MinIO's warning, when unset; MinIO's length rules apply);
#     anonymous and wrongly signed requests are refused;
#   - users and policies: SeaweedFS's IAM API on the S3 port (the stand-in mc's `mc admin user
#     add` and `mc admin policy create/attach` use it, as MinIO's admin API shares its S3 port),
#     writable with the root credentials only. A user's policy (AWS policy JSON) is enforced as
#     MinIO does: its key reaches only what the policy allows. Users and policies live in the
#     filer, under DIR, so they survive restarts as MinIO's (in DIR/.minio.sys) do;
#   - S3 on --address (default :9000, all interfaces); everything else SeaweedFS listens on
#     (master, volume server, filer, admin server, their gRPC ports, and the S3 gateway itself)
#     is bound to 127.0.0.1 inside the container, and a `socat` forwarder carries the S3 port to
#     the gateway, so the network reaches nothing but the signed S3 API;
#   - data under DIR/.seaweedfs (DIR is the /data volume); the identities file is generated at
#     each start from the environment, outside the volume;
#   - no console (MINIO_BROWSER is irrelevant), no telemetry, WebDAV, Iceberg, Lance or admin UI;
#   - this script stays PID 1's process (the entrypoint execs it) and turns SIGTERM/SIGINT into a
#     graceful stop of SeaweedFS, killing it if it has not exited after STANDIN_STOP_TIMEOUT
#     seconds (default 7, inside Docker's default 10 s grace period).
set -euo pipefail

readonly RUN_DIR=/run/minio-standin
readonly S3_INTERNAL_PORT=8333
readonly VOLUME_PORT=9340
STOP_TIMEOUT="${STANDIN_STOP_TIMEOUT:-7}"
if ! [[ "$STOP_TIMEOUT" =~ ^[0-9]+$ ]]; then
	printf 'FATAL STANDIN_STOP_TIMEOUT must be a whole number of seconds\n' >&2
	exit 1
fi

log() { printf '%s\n' "$*" >&2; }
fatal() {
	log "FATAL $*"
	exit 1
}

usage() {
	cat >&2 <<-'EOF'
		usage: minio server [--address [HOST]:PORT] [--console-address ADDR] [--quiet] [--json] DIR
		       minio --version
		(test stand-in for MinIO built from SeaweedFS: one directory, no erasure coding, no console)
	EOF
	exit 2
}

# JSON string body for a credential; refuses control characters rather than escaping them.
json_string() {
	local value="$1"
	if [[ "$value" == *[[:cntrl:]]* ]]; then
		fatal "Unable to validate credentials inherited from the shell environment: control characters are not allowed"
	fi
	value="${value//\\/\\\\}"
	value="${value//\"/\\\"}"
	printf '"%s"' "$value"
}

credentials() {
	ROOT_USER="${MINIO_ROOT_USER:-${MINIO_ACCESS_KEY:-}}"
	ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-${MINIO_SECRET_KEY:-}}"
	if [ -z "$ROOT_USER" ] && [ -z "$ROOT_PASSWORD" ]; then
		ROOT_USER=minioadmin
		ROOT_PASSWORD=minioadmin
		log "WARNING: Detected default credentials 'minioadmin:minioadmin', we recommend that you change these values with 'MINIO_ROOT_USER' and 'MINIO_ROOT_PASSWORD' environment variables"
	elif [ -z "$ROOT_USER" ] || [ -z "$ROOT_PASSWORD" ]; then
		fatal "Unable to validate credentials inherited from the shell environment: both MINIO_ROOT_USER and MINIO_ROOT_PASSWORD must be set"
	fi
	if [ "${#ROOT_USER}" -lt 3 ]; then
		fatal "Unable to validate credentials inherited from the shell environment: Invalid credentials: access key length should be at least 3 characters"
	fi
	if [ "${#ROOT_PASSWORD}" -lt 8 ]; then
		fatal "Unable to validate credentials inherited from the shell environment: Invalid credentials: secret key should be at least 8 characters"
	fi
	if [[ "$ROOT_USER" == *[,=]* ]]; then
		fatal "Unable to validate credentials inherited from the shell environment: Invalid credentials: access key contains one of reserved characters '=' or ','"
	fi
}

write_identities() {
	local file="$RUN_DIR/identities.json" user password
	user="$(json_string "$ROOT_USER")"
	password="$(json_string "$ROOT_PASSWORD")"
	(
		umask 077
		cat >"$file" <<-EOF
			{
			  "identities": [
			    {
			      "name": "minio-root",
			      "credentials": [{"accessKey": $user, "secretKey": $password}],
			      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
			    }
			  ]
			}
		EOF
	)
	printf '%s' "$file"
}

WEED_PID=
SOCAT_PID=
STOPPING=

on_signal() {
	STOPPING=1
	# stop taking connections first, then let SeaweedFS stop gracefully
	if [ -n "$SOCAT_PID" ]; then kill -TERM "$SOCAT_PID" 2>/dev/null || :; fi
	if [ -n "$WEED_PID" ]; then kill -TERM "$WEED_PID" 2>/dev/null || :; fi
}

# usage: finish_stop STATUS: wait (at most STOP_TIMEOUT s) for SeaweedFS to exit after SIGTERM,
# SIGKILL it if it has not (then STATUS 0 becomes 137), stop socat, and exit with STATUS.
finish_stop() {
	local waited=0 limit=$((STOP_TIMEOUT * 10)) status="$1"
	while kill -0 "$WEED_PID" 2>/dev/null; do
		if [ "$waited" -ge "$limit" ]; then
			log "SeaweedFS did not stop within ${STOP_TIMEOUT}s of SIGTERM: killing it"
			kill -KILL "$WEED_PID" 2>/dev/null || :
			[ "$status" != 0 ] || status=137
			break
		fi
		sleep 0.1
		waited=$((waited + 1))
	done
	wait "$WEED_PID" 2>/dev/null || :
	kill -KILL "$SOCAT_PID" 2>/dev/null || :
	wait "$SOCAT_PID" 2>/dev/null || :
	exit "$status"
}

server() {
	local address=':9000' dirs=()
	while [ "$#" -gt 0 ]; do
		case "$1" in
			--address) [ "$#" -ge 2 ] || usage; address="$2"; shift 2 ;;
			--address=*) address="${1#*=}"; shift ;;
			--console-address | --certs-dir | -S) [ "$#" -ge 2 ] || usage; shift 2 ;;
			--console-address=* | --certs-dir=* | --quiet | --json | --anonymous) shift ;;
			-h | --help) usage ;;
			-*) fatal "unsupported option for the stand-in: $1" ;;
			*) dirs+=("$1"); shift ;;
		esac
	done
	[ "${#dirs[@]}" -eq 1 ] || fatal "the stand-in serves exactly one directory (got ${#dirs[@]})"
	[[ "${dirs[0]}" != *'{'* ]] || fatal "the stand-in does not support ellipses (erasure sets): ${dirs[0]}"

	local host="${address%:*}" port="${address##*:}"
	[[ "$port" =~ ^[0-9]+$ ]] || fatal "invalid --address: $address"
	[ "$port" != "$S3_INTERNAL_PORT" ] || fatal "port $S3_INTERNAL_PORT is used inside the stand-in"
	host="${host:-0.0.0.0}"

	credentials
	local data="${dirs[0]}/.seaweedfs"
	mkdir -p "$data" "$RUN_DIR"
	chmod 0700 "$data" "$RUN_DIR"
	printf '%s\n' "$port" >"$RUN_DIR/s3-port"  # for `mc ready local`
	local identities
	identities="$(write_identities)"

	trap on_signal TERM INT

	cd "$data"
	# Every listener on 127.0.0.1; socat below is the only way in from the network.
	weed mini \
		-dir="$data" \
		-ip=127.0.0.1 -ip.bind=127.0.0.1 \
		-idleTimeout=5 \
		-volume.port="$VOLUME_PORT" \
		-s3.port="$S3_INTERNAL_PORT" \
		-s3.config="$identities" \
		-s3.iam=true -s3.iam.readOnly=false \
		-s3.localSocket="$RUN_DIR/s3.sock" \
		-filer.localSocket="$RUN_DIR/filer.sock" \
		-s3.allowDeleteBucketNotEmpty=false \
		-s3.autoCreateBucket=false \
		-s3.port.iceberg=0 -s3.port.lance=0 \
		-admin.ui=false -webdav=false \
		-master.telemetry=false &
	WEED_PID=$!
	socat "TCP-LISTEN:$port,bind=$host,fork,reuseaddr" "TCP:127.0.0.1:$S3_INTERNAL_PORT" &
	SOCAT_PID=$!
	log "MinIO stand-in (SeaweedFS $(weed version 2>/dev/null | head -n 1)): S3 on $host:$port, data in $data"

	local status=0
	wait -n "$WEED_PID" "$SOCAT_PID" || status=$?
	if [ -n "$STOPPING" ]; then
		log "Exiting on signal: stopping SeaweedFS"
		finish_stop 0
	fi
	# weed or socat exited on its own: stop the other, and exit non-zero so the restart policy acts
	log "FATAL a server process exited unexpectedly (status $status): stopping"
	on_signal
	finish_stop "$((status == 0 ? 1 : status))"
}

case "${1:-}" in
	server) shift; server "$@" ;;
	--version | -v | version) printf 'minio version RELEASE.2025-09-07T16-13-09Z (test stand-in: %s)\n' "$(weed version 2>/dev/null | head -n 1)" ;;
	*) usage ;;
esac
