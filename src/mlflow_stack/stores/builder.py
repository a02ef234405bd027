"""The ``mlflow.tracking_store`` entry point for ``postgresql`` URIs: the stack's store.

MLflow loads its entry points while ``mlflow.tracking`` is still being imported, so this module
imports nothing of MLflow's store code until a store is built.
"""

from __future__ import annotations

import os
from typing import Any


def build(store_uri: str, artifact_uri: str | None = None) -> Any:
    """A :class:`~mlflow_stack.stores.tracking.TrackingStore`, or MLflow's workspace-aware store
    when workspaces are on (``MLFLOW_ENABLE_WORKSPACES``), which the stack does not replace."""
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from mlflow.tracking._tracking_service import utils

    if MLFLOW_ENABLE_WORKSPACES.get():
        return utils._get_sqlalchemy_store(store_uri, artifact_uri)
    from mlflow_stack.stores.tracking import TrackingStore

    if artifact_uri is None:  # as MLflow's builder: inside the server, the server's root
        artifact_uri = os.environ.get(
            utils._SERVER_ARTIFACT_ROOT_ENV_VAR, utils.DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
        )
    return TrackingStore(store_uri, artifact_uri)
