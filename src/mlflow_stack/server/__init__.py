"""The server's request path: the ASGI layers in front of MLflow's app (:mod:`.app` builds
them), the input checks, and the artifact repository that MLflow loads by entry point."""
