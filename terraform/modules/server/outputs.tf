output "tracking_uri" {
  description = "MLFLOW_TRACKING_URI for clients: the load balancer (or domain_name), never a server, so it stays the same across upgrades."
  value       = local.tracking_uri
}

output "auth_mode" {
  description = "MLFLOW_STACK_AUTH_MODE of the servers: oidc (single sign-on, with oidc_issuer) or basic."
  value       = local.environment["MLFLOW_STACK_AUTH_MODE"]
}

output "oidc_redirect_uri" {
  description = "Redirect URI to register at the OpenID provider (<tracking_uri>/auth/callback); null without TLS, where single sign-on cannot run."
  value       = local.tls ? "${local.tracking_uri}/auth/callback" : null
}

output "oidc_post_logout_redirect_uri" {
  description = "Post-logout redirect URI to register at the OpenID provider (<tracking_uri>/); null without TLS."
  value       = local.tls ? "${local.tracking_uri}/" : null
}

output "load_balancer_dns_name" {
  description = "DNS name of the load balancer (point domain_name at it unless route53_zone_id does that)."
  value       = aws_lb.this.dns_name
}

output "load_balancer_zone_id" {
  description = "Route 53 zone of the load balancer's DNS name (for an alias record of your own)."
  value       = aws_lb.this.zone_id
}

output "load_balancer_arn_suffix" {
  description = "ARN suffix of the load balancer (the LoadBalancer dimension of its CloudWatch metrics)."
  value       = aws_lb.this.arn_suffix
}

output "target_group_arn" {
  description = "ARN of the servers' target group."
  value       = aws_lb_target_group.this.arn
}

output "target_group_arn_suffix" {
  description = "ARN suffix of the target group (the TargetGroup dimension of its CloudWatch metrics)."
  value       = aws_lb_target_group.this.arn_suffix
}

output "autoscaling_group_name" {
  description = "Name of the servers' Auto Scaling group."
  value       = aws_autoscaling_group.this.name
}

output "launch_template_id" {
  description = "ID of the servers' launch template."
  value       = aws_launch_template.this.id
}

output "launch_template_version" {
  description = "Version of the launch template the group runs (a new one starts an instance refresh)."
  value       = aws_launch_template.this.latest_version
}

output "certificate_arn" {
  description = "Certificate of the HTTPS listener (created with route53_zone_id, or certificate_arn); null without TLS."
  value       = local.tls ? local.certificate_arn : null
}

output "security_group_id" {
  description = "Security group of the servers (the database admits it)."
  value       = aws_security_group.this.id
}

output "image" {
  description = "The image the server runs."
  value       = local.image
}

output "ecr_repository_url" {
  description = "URL of the created ECR repository (push the mlflow-server image here); null with var.image."
  value       = local.create_repository ? aws_ecr_repository.this[0].repository_url : null
}

output "app_secret_arn" {
  description = "ARN of the secret holding MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY and, with single sign-on, MLFLOW_STACK_OIDC_CLIENT_SECRET (JSON)."
  value       = aws_secretsmanager_secret.app.arn
}

output "admin_username" {
  description = "The MLflow admin account."
  value       = local.environment["MLFLOW_AUTH_ADMIN_USERNAME"]
}

output "role_name" {
  description = "Name of the servers' role."
  value       = aws_iam_role.this.name
}

output "log_group_name" {
  description = "CloudWatch log group of the server container."
  value       = aws_cloudwatch_log_group.this.name
}

output "environment_names" {
  description = "Names of the variables in the server's env file (the settings contract)."
  value       = sort(keys(local.environment))
}

output "user_data" {
  description = "The rendered boot script (holds no secret)."
  value       = local.user_data
}

output "rollout" {
  description = "Environment of terraform/scripts/roll-out.sh, which rolls the group onto the latest launch template version (an instance refresh with auto rollback and the rollout alarms) and waits for it: GROUP, REGION, LAUNCH_TEMPLATE_ID, VERSION, DESIRED_CONFIGURATION and PREFERENCES (JSON of StartInstanceRefresh)."
  value       = local.rollout
}

output "rollout_alarm_names" {
  description = "The alarms that roll back an instance refresh in progress."
  value       = [for alarm in aws_cloudwatch_metric_alarm.rollout : alarm.alarm_name]
}
