# The network module against a mocked AWS provider: what the plan would create.

mock_provider "aws" {
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
    condition     = length(aws_vpc.this) == 0 && length(aws_subnet.public) == 0 && length(aws_flow_log.this) == 0
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
