#!/usr/bin/env bash
# Entrypoint of the TEST STAND-IN for minio/minio (see the Dockerfile beside it), as MinIO's own:
# arguments that are not a command are given to `minio` (`server /data` -> `minio server /data`),
# which is exec'd so that it is PID 1 and receives `docker stop`'s SIGTERM.
set -euo pipefail

if [ "${1:-}" != 'minio' ] && [ -n "${1:-}" ]; then
	set -- minio "$@"
fi
exec "$@"
