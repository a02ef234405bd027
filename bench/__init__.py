"""Side-by-side benchmark of stock MLflow set-ups and mlflow-stack (`make bench`)."""
