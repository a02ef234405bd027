"""``mlflow-stack gc``: permanently delete what was deleted long enough ago, through the server.

* :mod:`.locations`: where an artifact URI's objects are in the server's bucket;
* :mod:`.collector`: the server-side work (PostgreSQL rows and S3 objects);
* :mod:`mlflow_stack.server.gc_endpoint`: the admin-only ``POST /api/2.0/mlflow-stack/gc``
  ASGI layer;
* :mod:`.client`: the command line's side, which needs no storage keys.
"""

ENDPOINT = "/api/2.0/mlflow-stack/gc"
