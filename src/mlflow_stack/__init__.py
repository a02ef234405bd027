"""mlflow-stack: a self-hosted MLflow tracking server (PostgreSQL + S3, login required)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlflow-stack")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
