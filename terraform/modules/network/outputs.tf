output "vpc_id" {
  description = "ID of the VPC (created or passed in)."
  value       = local.create ? aws_vpc.this[0].id : var.vpc_id
}

output "public_subnet_ids" {
  description = "Subnets for the load balancer (routed to the internet gateway)."
  value       = local.create ? aws_subnet.public[*].id : var.public_subnet_ids
}

output "private_subnet_ids" {
  description = "Subnets for the servers and the database (no route from the internet)."
  value       = local.create ? aws_subnet.private[*].id : var.private_subnet_ids
}

output "flow_log_group_name" {
  description = "CloudWatch log group of the VPC flow logs (null when not created)."
  value       = local.flow_logs ? aws_cloudwatch_log_group.flow_logs[0].name : null
}

output "nat_gateway_id" {
  description = "The NAT gateway of the private subnets (null with egress = \"endpoints\" or an existing VPC)."
  value       = local.nat ? aws_nat_gateway.this[0].id : null
}

output "vpc_endpoint_ids" {
  description = "VPC endpoints of the created VPC by service: s3 (gateway) and, with egress = \"endpoints\", each interface endpoint."
  value = merge(
    { for service, endpoint in aws_vpc_endpoint.interface : service => endpoint.id },
    local.create ? { s3 = aws_vpc_endpoint.s3[0].id } : {},
  )
}
