# The network module against a mocked AWS provider: what the plan would create.

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = {
      name = "us-east-1"
    }
  }

  mock_data "aws_availability_zones" {
    defaults = {
      names = ["us-east-1a", "us-east-1b", "us-east-1c"]
    }
  }

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }

  mock_resource "aws_cloudwatch_log_group" {
    defaults = {
      arn = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/vpc-flow-logs/test"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/test-flow-logs"
    }
  }
}

variables {
  name        = "test"
  kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
}

run "creates_public_and_private_subnets_in_two_zones" {
  command = apply

  module {
    source = "./modules/network"
  }

  assert {
    condition     = length(aws_subnet.public) == 2 && length(aws_subnet.private) == 2
    error_message = "Expected two public and two private subnets."
  }

  assert {
    condition     = toset(aws_subnet.public[*].availability_zone) == toset(["us-east-1a", "us-east-1b"]) && toset(aws_subnet.private[*].availability_zone) == toset(["us-east-1a", "us-east-1b"])
    error_message = "Each tier must span two availability zones."
  }

  assert {
    condition     = !anytrue([for subnet in concat(aws_subnet.public, aws_subnet.private) : subnet.map_public_ip_on_launch])
    error_message = "No subnet may hand out public addresses by default."
  }

  assert {
    condition     = length(aws_route.public_internet) == 1 && aws_route.public_internet[0].route_table_id == aws_route_table.public[0].id
    error_message = "Only the public route table may route to the internet."
  }

  assert {
    condition     = output.vpc_id == aws_vpc.this[0].id && length(output.private_subnet_ids) == 2
    error_message = "Outputs must name the created VPC and subnets."
  }
}

run "default_security_group_is_closed" {
  command = apply

  module {
    source = "./modules/network"
  }

  assert {
    condition     = length(aws_default_security_group.this) == 1 && aws_default_security_group.this[0].vpc_id == aws_vpc.this[0].id
    error_message = "The module must take over the VPC's default security group."
  }

  assert {
    condition     = length(aws_default_security_group.this[0].ingress) == 0 && length(aws_default_security_group.this[0].egress) == 0
    error_message = "The default security group must have no rules."
  }
}

run "flow_logs_are_encrypted_and_kept_a_year" {
  command = apply

  module {
    source = "./modules/network"
  }

  assert {
    condition     = aws_flow_log.this[0].traffic_type == "ALL" && aws_flow_log.this[0].vpc_id == aws_vpc.this[0].id
    error_message = "All traffic of the VPC must be logged."
  }

  assert {
    condition     = aws_cloudwatch_log_group.flow_logs[0].kms_key_id == var.kms_key_arn && aws_cloudwatch_log_group.flow_logs[0].retention_in_days == 365
    error_message = "Flow logs must be KMS-encrypted and kept 365 days."
  }

  assert {
    condition     = jsondecode(aws_iam_role_policy.flow_logs[0].policy).Statement[0].Resource == "${aws_cloudwatch_log_group.flow_logs[0].arn}:*"
    error_message = "The flow log role may write only to its own log group."
  }
}

run "private_subnets_reach_aws_through_one_nat_gateway_and_s3_through_a_gateway_endpoint" {
  command = apply

  module {
    source = "./modules/network"
  }

  assert {
    condition     = length(aws_nat_gateway.this) == 1 && aws_nat_gateway.this[0].subnet_id == aws_subnet.public[0].id && aws_nat_gateway.this[0].allocation_id == aws_eip.nat[0].id && aws_eip.nat[0].domain == "vpc"
    error_message = "By default one NAT gateway, in the first public subnet, with its own address."
  }

  assert {
    condition     = length(aws_route.private_nat) == 1 && aws_route.private_nat[0].route_table_id == aws_route_table.private[0].id && aws_route.private_nat[0].destination_cidr_block == "0.0.0.0/0" && aws_route.private_nat[0].nat_gateway_id == aws_nat_gateway.this[0].id
    error_message = "The private subnets route out through the NAT gateway."
  }

  assert {
    condition     = aws_vpc_endpoint.s3[0].service_name == "com.amazonaws.us-east-1.s3" && aws_vpc_endpoint.s3[0].vpc_endpoint_type == "Gateway" && aws_vpc_endpoint.s3[0].route_table_ids == toset([aws_route_table.private[0].id])
    error_message = "S3 (artifacts, image layers, package repositories) goes through the free gateway endpoint."
  }

  assert {
    condition     = length(aws_vpc_endpoint.interface) == 0 && length(aws_security_group.endpoints) == 0 && output.nat_gateway_id == aws_nat_gateway.this[0].id && keys(output.vpc_endpoint_ids) == ["s3"]
    error_message = "With a NAT gateway no interface endpoint is paid for."
  }
}

run "private_subnets_without_any_route_out_reach_aws_through_interface_endpoints" {
  command = apply

  module {
    source = "./modules/network"
  }

  variables {
    egress = "endpoints"
  }

  assert {
    condition     = length(aws_nat_gateway.this) == 0 && length(aws_eip.nat) == 0 && length(aws_route.private_nat) == 0 && output.nat_gateway_id == null
    error_message = "With endpoints there is no NAT gateway and no route out of the private subnets."
  }

  assert {
    condition     = toset(keys(aws_vpc_endpoint.interface)) == toset(["ecr.api", "ecr.dkr", "secretsmanager", "ssm", "ssmmessages", "ec2messages", "logs", "kms"])
    error_message = "One interface endpoint per AWS API the servers call."
  }

  assert {
    condition = alltrue([for service, endpoint in aws_vpc_endpoint.interface :
      endpoint.service_name == "com.amazonaws.us-east-1.${service}" && endpoint.vpc_endpoint_type == "Interface" && endpoint.private_dns_enabled
      && endpoint.subnet_ids == toset(aws_subnet.private[*].id) && endpoint.security_group_ids == toset([aws_security_group.endpoints[0].id])
    ])
    error_message = "Each endpoint sits in both private subnets with private DNS, so the usual API names resolve to it."
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.endpoints_https[0].from_port == 443 && aws_vpc_security_group_ingress_rule.endpoints_https[0].to_port == 443 && aws_vpc_security_group_ingress_rule.endpoints_https[0].cidr_ipv4 == "10.42.0.0/16"
    error_message = "The endpoints admit HTTPS from inside the VPC only."
  }

  assert {
    condition     = length(aws_vpc_endpoint.s3) == 1 && toset(keys(output.vpc_endpoint_ids)) == toset(["s3", "ecr.api", "ecr.dkr", "secretsmanager", "ssm", "ssmmessages", "ec2messages", "logs", "kms"])
    error_message = "S3 still goes through the gateway endpoint."
  }
}

run "rejects_an_unknown_egress" {
  command = plan

  module {
    source = "./modules/network"
  }

  variables {
    egress = "internet"
  }

  expect_failures = [var.egress]
}

run "uses_an_existing_vpc" {
  command = plan

  module {
    source = "./modules/network"
  }

  variables {
    vpc_id             = "vpc-0123456789abcdef0"
    public_subnet_ids  = ["subnet-0000000000000000a", "subnet-0000000000000000b"]
    private_subnet_ids = ["subnet-0000000000000000c", "subnet-0000000000000000d"]
  }

  assert {
    condition     = length(aws_vpc.this) == 0 && length(aws_subnet.public) == 0 && length(aws_flow_log.this) == 0 && length(aws_nat_gateway.this) == 0 && length(aws_vpc_endpoint.s3) == 0 && output.vpc_endpoint_ids == {}
    error_message = "Nothing may be created in an existing VPC."
  }

  assert {
    condition     = output.vpc_id == "vpc-0123456789abcdef0" && output.private_subnet_ids == tolist(["subnet-0000000000000000c", "subnet-0000000000000000d"])
    error_message = "The given VPC and subnets must be passed through."
  }
}

run "rejects_an_existing_vpc_without_subnets" {
  command = plan

  module {
    source = "./modules/network"
  }

  variables {
    vpc_id = "vpc-0123456789abcdef0"
  }

  expect_failures = [var.public_subnet_ids, var.private_subnet_ids]
}

run "rejects_a_malformed_vpc_cidr" {
  command = plan

  module {
    source = "./modules/network"
  }

  variables {
    vpc_cidr = "10.42.0.0/33"
  }

  expect_failures = [var.vpc_cidr]
}
