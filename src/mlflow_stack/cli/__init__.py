"""The ``mlflow-stack`` command line (:mod:`.main`), one module per command group."""
