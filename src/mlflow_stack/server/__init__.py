"""The server's request path: the ASGI layers in front of MLflow's app (:mod:`.app` builds
them), the input checks, and the artifact repository that MLflow loads by entry point."""

# Where the workers keep their request counts (:mod:`.metrics`). It must be in the environment
# before prometheus_client is first imported, which picks its value class then: so here, where
# `serve` reads it without importing prometheus_client (the master imports it in its preload).
MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
