output "vpc_id" {
  description = "ID of the VPC (created or passed in)."
  value       = local.create ? aws_vpc.this[0].id : var.vpc_id
}

output "public_subnet_ids" {
  description = "Subnets for the server and the load balancer."
  value       = local.create ? aws_subnet.public[*].id : var.public_subnet_ids
}

output "private_subnet_ids" {
  description = "Subnets for the database."
  value       = local.create ? aws_subnet.private[*].id : var.private_subnet_ids
}

output "flow_log_group_name" {
  description = "CloudWatch log group of the VPC flow logs (null when not created)."
  value       = local.flow_logs ? aws_cloudwatch_log_group.flow_logs[0].name : null
}
