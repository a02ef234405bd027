output "instance_id" {
  description = "ID of the EC2 instance (for `aws ssm start-session --target`)."
  value       = aws_instance.this.id
}

output "security_group_id" {
  description = "Security group of the instance (the database admits it)."
  value       = aws_security_group.this.id
}

output "public_ip" {
  description = "Public IPv4 address of the instance (empty without one)."
  value       = aws_instance.this.public_ip
}

output "public_dns" {
  description = "Public DNS name of the instance (empty without one)."
  value       = aws_instance.this.public_dns
}

output "private_ip" {
  description = "Private IPv4 address of the instance."
  value       = aws_instance.this.private_ip
}

output "load_balancer_dns_name" {
  description = "DNS name of the HTTPS load balancer (null without certificate_arn); point domain_name at it."
  value       = local.tls ? aws_lb.this[0].dns_name : null
}

output "tracking_uri" {
  description = "MLFLOW_TRACKING_URI for clients."
  value = (local.tls
    ? "https://${coalesce(var.domain_name, aws_lb.this[0].dns_name)}"
    : "http://${coalesce(var.domain_name, aws_instance.this.public_dns, aws_instance.this.public_ip, aws_instance.this.private_ip)}:${local.container_port}"
  )
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
  description = "ARN of the secret holding MLFLOW_AUTH_ADMIN_PASSWORD and MLFLOW_FLASK_SERVER_SECRET_KEY (JSON)."
  value       = aws_secretsmanager_secret.app.arn
}

output "admin_username" {
  description = "The MLflow admin account."
  value       = local.environment["MLFLOW_AUTH_ADMIN_USERNAME"]
}

output "role_name" {
  description = "Name of the instance role."
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
