output "tracking_uri" {
  description = "MLFLOW_TRACKING_URI for team members."
  value       = module.server.tracking_uri
}

output "auth_mode" {
  description = "How people sign in: oidc (single sign-on with oidc_issuer; scripts send an access token as MLFLOW_TRACKING_TOKEN) or basic (MLflow's users and passwords)."
  value       = module.server.auth_mode
}

output "oidc_redirect_uri" {
  description = "Redirect URI to register for the server at the OpenID provider (<tracking_uri>/auth/callback; docs/sso-providers.md); null without TLS."
  value       = module.server.oidc_redirect_uri
}

output "oidc_post_logout_redirect_uri" {
  description = "Post-logout redirect URI to register at the OpenID provider (<tracking_uri>/); null without TLS."
  value       = module.server.oidc_post_logout_redirect_uri
}

output "admin_username" {
  description = "MLFLOW_TRACKING_USERNAME of the admin account."
  value       = module.server.admin_username
}

output "admin_password_secret_arn" {
  description = "Secret holding the admin password (and, with single sign-on, the OIDC client secret): aws secretsmanager get-secret-value --secret-id <this> --query SecretString --output text | jq -r .MLFLOW_AUTH_ADMIN_PASSWORD"
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

output "autoscaling_group_name" {
  description = "The servers' Auto Scaling group: aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names <this>"
  value       = module.server.autoscaling_group_name
}

output "target_group_arn" {
  description = "The servers' target group: aws elbv2 describe-target-health --target-group-arn <this>"
  value       = module.server.target_group_arn
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms: subscribe your on-call endpoints."
  value       = module.alarms.sns_topic_arn
}

output "pre_migration_snapshot_id" {
  description = "The database snapshot taken before the current image first started (null when db_snapshot_before_upgrade is false)."
  value       = module.database.pre_migration_snapshot_id
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
  description = "DNS name of the load balancer (the stable address; point domain_name at it unless route53_zone_id does)."
  value       = module.server.load_balancer_dns_name
}

output "server_log_group" {
  description = "CloudWatch log group of the servers: <instance>/server (MLflow), <instance>/journal (boot and systemd)."
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

output "database_log_groups" {
  description = "CloudWatch log groups of the database (PostgreSQL log, upgrade log)."
  value       = module.database.log_group_names
}

output "architecture" {
  description = "CPU architecture of the servers (the platform to build the image for)."
  value       = var.architecture
}

output "access_logs_bucket" {
  description = "S3 bucket of the load balancer's access logs (under the alb/ prefix)."
  value       = module.access_logs.bucket_name
}
