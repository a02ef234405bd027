output "tracking_uri" {
  description = "MLFLOW_TRACKING_URI for team members."
  value       = module.server.tracking_uri
}

output "admin_username" {
  description = "MLFLOW_TRACKING_USERNAME of the admin account."
  value       = module.server.admin_username
}

output "admin_password_secret_arn" {
  description = "Secret holding the admin password: aws secretsmanager get-secret-value --secret-id <this> --query SecretString --output text | jq -r .MLFLOW_AUTH_ADMIN_PASSWORD"
  value       = module.server.app_secret_arn
}

output "bucket_name" {
  description = "The artifact bucket."
  value       = module.artifacts.bucket_name
}

output "database_endpoint" {
  description = "host:port of the PostgreSQL database (reachable only from the server)."
  value       = module.database.endpoint
}

output "database_secret_arn" {
  description = "Secret holding the database connection (JSON: username, password, host, port, dbname)."
  value       = module.database.secret_arn
}

output "instance_id" {
  description = "The server instance: aws ssm start-session --target <this>"
  value       = module.server.instance_id
}

output "ecr_repository_url" {
  description = "Push the mlflow-server image here (null when var.image is set)."
  value       = module.server.ecr_repository_url
}

output "image" {
  description = "The image the server runs."
  value       = module.server.image
}

output "load_balancer_dns_name" {
  description = "DNS name of the HTTPS load balancer (null without certificate_arn)."
  value       = module.server.load_balancer_dns_name
}

output "server_log_group" {
  description = "CloudWatch log group of the MLflow container."
  value       = module.server.log_group_name
}

output "kms_key_arn" {
  description = "The stack's KMS key."
  value       = aws_kms_key.this.arn
}

output "vpc_id" {
  description = "The VPC of the stack."
  value       = module.network.vpc_id
}

output "region" {
  description = "The region of the stack."
  value       = local.region
}
