provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ "mlflow-stack:name" = var.name, ManagedBy = "terraform" }, var.tags)
  }
}
