#!/usr/bin/env bash
# `mc` of the TEST STAND-IN for minio/minio (see the Dockerfile beside it): installed as
# /usr/bin/mc, it implements only `mc ready local`, the compose healthcheck.
#
# Ready means, checked once (the real `mc ready` keeps retrying until the cluster is ready):
#   - the S3 port (`minio server --address`, 9000 by default) answers an unsigned `GET /` with an
#     HTTP status below 500 (403 AccessDenied: anonymous requests are refused), and
#   - SeaweedFS's master knows the volume server and at least as many volumes as that server
#     holds on disk: until its first heartbeat arrives (usually within a second of a start, but
#     it can take several), objects written before the restart answer 500 "volume not found".
set -euo pipefail

readonly RUN_DIR=/run/minio-standin
readonly MASTER_PORT=9333 VOLUME_PORT=9340

if [ "$#" -ne 2 ] || [ "$1" != ready ] || [ "$2" != local ]; then
	printf 'mc (MinIO test stand-in): only "mc ready local" is implemented\n' >&2
	exit 2
fi

# usage: http_get PORT PATH: print the response (status line, headers, body) to an unsigned GET
# on 127.0.0.1:PORT; at most 2 s.
http_get() {
	local response=''
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$2" "$1" >&3
	IFS= read -r -d '' -t 2 response <&3 || :
	exec 3<&-
	printf '%s' "$response"
}

not_ready() {
	printf 'The cluster is not ready: %s\n' "$1" >&2
	exit 1
}

port=9000
if [ -r "$RUN_DIR/s3-port" ]; then
	read -r port <"$RUN_DIR/s3-port"
fi

s3="$(http_get "$port" / 2>/dev/null)" || not_ready "S3 on port $port does not answer"
[[ "$s3" =~ ^HTTP/1\.[01]\ ([0-9]{3}) ]] || not_ready "S3 on port $port does not answer HTTP"
[ "${BASH_REMATCH[1]}" -lt 500 ] || not_ready "S3 on port $port answered ${BASH_REMATCH[1]}"

volume="$(http_get "$VOLUME_PORT" /status 2>/dev/null)" || not_ready "the volume server does not answer"
[[ "$volume" =~ ^HTTP/1\.[01]\ 200 ]] || not_ready "the volume server's /status failed"
on_disk="$( { grep -o '"Id":[0-9]*' <<<"$volume" || :; } | wc -l)"  # 0 on a fresh /data

master="$(http_get "$MASTER_PORT" /dir/status 2>/dev/null)" || not_ready "the master does not answer"
[[ "$master" =~ \"Url\":\"127\.0\.0\.1:$VOLUME_PORT\"[^}]*\"Volumes\":([0-9]+) ]] ||
	not_ready "the volume server has not joined the master yet"
[ "${BASH_REMATCH[1]}" -ge "$on_disk" ] ||
	not_ready "the master knows ${BASH_REMATCH[1]} of the $on_disk volumes on disk"
printf 'The cluster is ready\n'
