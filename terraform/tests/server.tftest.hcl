# The server module against a mocked AWS provider.

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = {
      name = "us-east-1"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }

  mock_data "aws_ssm_parameter" {
    defaults = {
      insecure_value = "ami-0123456789abcdef0"
    }
  }

  mock_resource "aws_secretsmanager_secret" {
    defaults = {
      arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:test/mlflow-AbCdEf"
    }
  }

  mock_resource "aws_cloudwatch_log_group" {
    defaults = {
      arn = "arn:aws:logs:us-east-1:123456789012:log-group:/mlflow-stack/test/server"
    }
  }

  mock_resource "aws_ecr_repository" {
    defaults = {
      arn            = "arn:aws:ecr:us-east-1:123456789012:repository/test/mlflow-server"
      repository_url = "123456789012.dkr.ecr.us-east-1.amazonaws.com/test/mlflow-server"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/test-server"
    }
  }

  mock_resource "aws_lb" {
    defaults = {
      arn      = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/test/0123456789abcdef"
      dns_name = "test-123456789.us-east-1.elb.amazonaws.com"
    }
  }

  mock_resource "aws_lb_target_group" {
    defaults = {
      arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/test-server/0123456789abcdef"
    }
  }

  mock_resource "aws_instance" {
    defaults = {
      public_dns = "ec2-203-0-113-10.compute-1.amazonaws.com"
      public_ip  = "203.0.113.10"
    }
  }
}

override_resource {
  target = aws_security_group.this
  values = {
    id = "sg-0a0a0a0a0a0a0a0a0"
  }
}

override_resource {
  target = aws_security_group.alb
  values = {
    id = "sg-0b0b0b0b0b0b0b0b0"
  }
}

variables {
  name                       = "test"
  vpc_id                     = "vpc-0123456789abcdef0"
  subnet_id                  = "subnet-0000000000000000a"
  allowed_cidrs              = ["203.0.113.0/24", "2001:db8::/48"]
  bucket_name                = "test-artifacts"
  bucket_arn                 = "arn:aws:s3:::test-artifacts"
  database_address           = "test.abcdefghijkl.us-east-1.rds.amazonaws.com"
  database_security_group_id = "sg-0d0d0d0d0d0d0d0d0"
  database_secret_arn        = "arn:aws:secretsmanager:us-east-1:123456789012:secret:test/database-GhIjKl"
  kms_key_arn                = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
  admin_password             = "NotARealAdminPassword0123"
  flask_secret_key           = "NotARealFlaskSecretKey0123456789abcdef"
}

run "instance_requires_imdsv2_and_encrypts_its_disk" {
  command = apply

  module {
    source = "./modules/server"
  }

  assert {
    condition     = aws_instance.this.metadata_options[0].http_tokens == "required" && aws_instance.this.metadata_options[0].http_endpoint == "enabled"
    error_message = "IMDSv2 (session tokens) must be required."
  }

  assert {
    condition     = aws_instance.this.metadata_options[0].http_put_response_hop_limit <= 2
    error_message = "The metadata service must not be reachable beyond the container on the instance."
  }

  assert {
    condition     = aws_instance.this.root_block_device[0].encrypted && aws_instance.this.root_block_device[0].kms_key_id == var.kms_key_arn
    error_message = "The root volume must be encrypted with the stack's key."
  }

  assert {
    condition     = aws_instance.this.ebs_optimized && aws_instance.this.monitoring && aws_instance.this.user_data_replace_on_change
    error_message = "EBS-optimized, detailed monitoring, and a new instance for new user data expected."
  }

  assert {
    condition     = aws_iam_role_policy_attachment.ssm.policy_arn == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    error_message = "The instance must be reachable through Session Manager."
  }
}

run "instance_role_is_scoped_to_this_bucket_and_these_secrets" {
  command = apply

  module {
    source = "./modules/server"
  }

  assert {
    condition = alltrue(flatten([
      for statement in jsondecode(aws_iam_role_policy.this.policy).Statement : [
        for resource in flatten([statement.Resource]) :
        contains(["arn:aws:s3:::test-artifacts", "arn:aws:s3:::test-artifacts/*"], resource)
      ] if anytrue([for action in flatten([statement.Action]) : startswith(action, "s3:")])
    ]))
    error_message = "Every S3 permission must name the artifact bucket or its objects, nothing else."
  }

  assert {
    condition = toset(flatten([
      for statement in jsondecode(aws_iam_role_policy.this.policy).Statement : flatten([statement.Resource])
      if anytrue([for action in flatten([statement.Action]) : startswith(action, "s3:")])
    ])) == toset(["arn:aws:s3:::test-artifacts", "arn:aws:s3:::test-artifacts/*"])
    error_message = "The role must be able to list the bucket and use its objects."
  }

  assert {
    condition = toset(flatten([
      for statement in jsondecode(aws_iam_role_policy.this.policy).Statement : flatten([statement.Resource])
      if contains(flatten([statement.Action]), "secretsmanager:GetSecretValue")
    ])) == toset([var.database_secret_arn, "arn:aws:secretsmanager:us-east-1:123456789012:secret:test/mlflow-AbCdEf"])
    error_message = "The role may read exactly the database secret and the application secret."
  }

  assert {
    condition = alltrue([
      for statement in jsondecode(aws_iam_role_policy.this.policy).Statement :
      !contains(flatten([statement.Resource]), "*") && !anytrue([for action in flatten([statement.Action]) : endswith(action, "*")])
    ])
    error_message = "No wildcard resource or action in the instance policy."
  }

  assert {
    condition = toset(flatten([
      for statement in jsondecode(aws_iam_role_policy.pull_image[0].policy).Statement : flatten([statement.Resource])
      if statement.Action != "ecr:GetAuthorizationToken"
    ])) == toset(["arn:aws:ecr:us-east-1:123456789012:repository/test/mlflow-server"])
    error_message = "The role may pull from the stack's repository only."
  }
}

run "no_ingress_from_the_internet_by_default" {
  command = apply

  module {
    source = "./modules/server"
  }

  assert {
    condition     = toset([for rule in aws_vpc_security_group_ingress_rule.mlflow_ipv4 : rule.cidr_ipv4]) == toset(["203.0.113.0/24"]) && toset([for rule in aws_vpc_security_group_ingress_rule.mlflow_ipv6 : rule.cidr_ipv6]) == toset(["2001:db8::/48"])
    error_message = "The MLflow port must be open to allowed_cidrs exactly."
  }

  assert {
    condition = alltrue([
      for rule in concat(values(aws_vpc_security_group_ingress_rule.mlflow_ipv4), values(aws_vpc_security_group_ingress_rule.mlflow_ipv6)) :
      rule.from_port == 5000 && rule.to_port == 5000 && rule.security_group_id == aws_security_group.this.id
    ])
    error_message = "Only the MLflow port may be open."
  }

  assert {
    condition = !anytrue([
      for rule in concat(values(aws_vpc_security_group_ingress_rule.mlflow_ipv4), values(aws_vpc_security_group_ingress_rule.mlflow_ipv6)) :
      contains(["0.0.0.0/0", "::/0"], coalesce(rule.cidr_ipv4, rule.cidr_ipv6))
    ])
    error_message = "No ingress from 0.0.0.0/0 or ::/0."
  }

  assert {
    condition     = length(aws_security_group.this.ingress) == 0 && length(aws_lb.this) == 0 && length(aws_vpc_security_group_ingress_rule.mlflow_from_load_balancer) == 0
    error_message = "Without a certificate there is no load balancer and no other ingress."
  }

  assert {
    condition     = aws_vpc_security_group_egress_rule.https.from_port == 443 && aws_vpc_security_group_egress_rule.postgres.referenced_security_group_id == var.database_security_group_id && aws_vpc_security_group_egress_rule.postgres.cidr_ipv4 == null
    error_message = "Egress is HTTPS, and PostgreSQL to the database's security group only."
  }

  assert {
    condition     = aws_instance.this.vpc_security_group_ids == toset([aws_security_group.this.id])
    error_message = "The instance must be in its own security group only."
  }

  assert {
    condition     = output.tracking_uri == "http://ec2-203-0-113-10.compute-1.amazonaws.com:5000"
    error_message = "Without TLS, clients reach the instance's public name on port 5000."
  }
}

run "user_data_writes_the_settings_contract" {
  command = apply

  module {
    source = "./modules/server"
  }

  assert {
    condition = alltrue([for line in [
      "POSTGRES_HOST=test.abcdefghijkl.us-east-1.rds.amazonaws.com\n",
      "POSTGRES_PORT=5432\n",
      "POSTGRES_SSLMODE=require\n",
      "POSTGRES_PASSWORD=$${POSTGRES_PASSWORD}\n",
      "MLFLOW_STACK_S3_BUCKET=test-artifacts\n",
      "MLFLOW_STACK_S3_ENDPOINT_URL=\n",
      "MLFLOW_STACK_S3_ACCESS_KEY=\n",
      "MLFLOW_STACK_S3_SECRET_KEY=\n",
      "MLFLOW_STACK_S3_REGION=us-east-1\n",
      "MLFLOW_STACK_HOST=0.0.0.0\n",
      "MLFLOW_STACK_PORT=5000\n",
      "MLFLOW_STACK_ALLOWED_HOSTS=$${PUBLIC_HOSTNAME},$${PUBLIC_IPV4}\n",
      "MLFLOW_AUTH_ADMIN_PASSWORD=$${MLFLOW_AUTH_ADMIN_PASSWORD}\n",
      "MLFLOW_FLASK_SERVER_SECRET_KEY=$${MLFLOW_FLASK_SERVER_SECRET_KEY}\n",
      "MLFLOW_STACK_WORKERS=2\n",
    ] : strcontains(output.user_data, line)])
    error_message = "The env file must point at RDS and S3 through the instance role, with secrets filled in at boot."
  }

  assert {
    condition     = !strcontains(output.user_data, "NotARealAdminPassword0123") && !strcontains(output.user_data, "NotARealFlaskSecretKey") && !strcontains(output.user_data, "AWS_SECRET_ACCESS_KEY")
    error_message = "No password or static key may be in the user data."
  }

  assert {
    condition     = strcontains(output.user_data, "--env-file $ENV_FILE") && strcontains(output.user_data, "Restart=on-failure") && strcontains(output.user_data, "123456789012.dkr.ecr.us-east-1.amazonaws.com/test/mlflow-server:0.1.0")
    error_message = "The unit must run the stack's image with the env file and restart on failure."
  }

  assert {
    condition     = aws_secretsmanager_secret_version.app.secret_string == null && aws_secretsmanager_secret.app.kms_key_id == var.kms_key_arn
    error_message = "The application secret must be written write-only and encrypted with the stack's key."
  }
}

run "settings_can_be_overridden" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    settings = {
      MLFLOW_STACK_WORKERS                 = "4"
      MLFLOW_STACK_AUTH_DEFAULT_PERMISSION = "NO_PERMISSIONS"
    }
    domain_name = "mlflow.example.com"
  }

  assert {
    condition     = strcontains(output.user_data, "MLFLOW_STACK_WORKERS=4\n") && strcontains(output.user_data, "MLFLOW_STACK_AUTH_DEFAULT_PERMISSION=NO_PERMISSIONS\n")
    error_message = "settings must reach the env file."
  }

  assert {
    condition     = strcontains(output.user_data, "MLFLOW_STACK_ALLOWED_HOSTS=mlflow.example.com,")
    error_message = "domain_name must be an allowed host."
  }
}

run "tls_puts_an_https_load_balancer_in_front" {
  command = apply

  module {
    source = "./modules/server"
  }

  variables {
    certificate_arn          = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
    load_balancer_subnet_ids = ["subnet-0000000000000000a", "subnet-0000000000000000b"]
    domain_name              = "mlflow.example.com"
  }

  assert {
    condition     = length(aws_lb.this) == 1 && !aws_lb.this[0].internal && aws_lb.this[0].drop_invalid_header_fields
    error_message = "An internet-facing load balancer that drops invalid headers expected."
  }

  assert {
    condition     = length(aws_lb_listener.https) == 1 && aws_lb_listener.https[0].port == 443 && aws_lb_listener.https[0].protocol == "HTTPS" && aws_lb_listener.https[0].certificate_arn == var.certificate_arn
    error_message = "The only listener must be HTTPS on 443 with the given certificate."
  }

  assert {
    condition     = startswith(aws_lb_listener.https[0].ssl_policy, "ELBSecurityPolicy-TLS13-1-2")
    error_message = "The listener must use a TLS 1.2/1.3 policy."
  }

  assert {
    condition     = toset([for rule in aws_vpc_security_group_ingress_rule.https_ipv4 : rule.cidr_ipv4]) == toset(["203.0.113.0/24"]) && alltrue([for rule in aws_vpc_security_group_ingress_rule.https_ipv4 : rule.from_port == 443 && rule.security_group_id == "sg-0b0b0b0b0b0b0b0b0"])
    error_message = "The load balancer must admit HTTPS from allowed_cidrs only."
  }

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.mlflow_ipv4) == 0 && length(aws_vpc_security_group_ingress_rule.mlflow_ipv6) == 0
    error_message = "With TLS, no address range may reach the instance directly."
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.mlflow_from_load_balancer[0].referenced_security_group_id == "sg-0b0b0b0b0b0b0b0b0" && aws_vpc_security_group_ingress_rule.mlflow_from_load_balancer[0].security_group_id == "sg-0a0a0a0a0a0a0a0a0"
    error_message = "The instance must admit the MLflow port from the load balancer's security group only."
  }

  assert {
    condition     = output.tracking_uri == "https://mlflow.example.com" && strcontains(output.user_data, "MLFLOW_STACK_ALLOWED_HOSTS=mlflow.example.com,test-123456789.us-east-1.elb.amazonaws.com,")
    error_message = "Clients use https://<domain_name>, and both names are allowed hosts."
  }
}

run "rejects_empty_allowed_cidrs" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    allowed_cidrs = []
  }

  expect_failures = [var.allowed_cidrs]
}

run "rejects_a_malformed_cidr" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    allowed_cidrs = ["203.0.113.300/24"]
  }

  expect_failures = [var.allowed_cidrs]
}

run "rejects_a_cidr_with_host_bits" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    allowed_cidrs = ["203.0.113.7/24"]
  }

  expect_failures = [var.allowed_cidrs]
}

run "rejects_the_whole_internet_without_opt_in" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    allowed_cidrs = ["0.0.0.0/0"]
  }

  expect_failures = [var.allowed_cidrs]
}

run "admits_the_whole_internet_with_opt_in" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    allowed_cidrs        = ["0.0.0.0/0"]
    allow_public_ingress = true
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.mlflow_ipv4["0.0.0.0/0"].cidr_ipv4 == "0.0.0.0/0"
    error_message = "allow_public_ingress must permit a /0 block."
  }
}

run "rejects_an_instance_type_of_another_architecture" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    instance_type = "t4g.small"
  }

  expect_failures = [var.instance_type]
}

run "rejects_overriding_an_infrastructure_setting" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    settings = { POSTGRES_HOST = "elsewhere.example.com" }
  }

  expect_failures = [var.settings]
}

run "rejects_a_setting_value_the_shell_would_expand" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    settings = { MLFLOW_AUTH_ADMIN_USERNAME = "$(reboot)" }
  }

  expect_failures = [var.settings]
}

run "rejects_a_certificate_without_load_balancer_subnets" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
  }

  expect_failures = [var.load_balancer_subnet_ids]
}
