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
      arn        = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/test/0123456789abcdef"
      arn_suffix = "app/test/0123456789abcdef"
      dns_name   = "test-123456789.us-east-1.elb.amazonaws.com"
      zone_id    = "Z35SXDOTRQ7X7K"
    }
  }

  mock_resource "aws_lb_target_group" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/test-server/0123456789abcdef"
      arn_suffix = "targetgroup/test-server/0123456789abcdef"
    }
  }

  mock_resource "aws_iam_instance_profile" {
    defaults = {
      arn = "arn:aws:iam::123456789012:instance-profile/test-server-0001"
    }
  }

  mock_resource "aws_acm_certificate" {
    defaults = {
      arn = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
      domain_validation_options = [{
        domain_name           = "mlflow.example.com"
        resource_record_name  = "_0123456789abcdef.mlflow.example.com."
        resource_record_type  = "CNAME"
        resource_record_value = "_fedcba9876543210.acm-validations.aws."
      }]
    }
  }

  mock_resource "aws_acm_certificate_validation" {
    defaults = {
      certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
    }
  }

  mock_resource "aws_launch_template" {
    defaults = {
      id             = "lt-0123456789abcdef0"
      latest_version = 1
    }
  }

  mock_data "aws_vpc" {
    defaults = {
      cidr_block = "10.42.0.0/16"
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
  subnet_ids                 = ["subnet-0000000000000000a", "subnet-0000000000000000b"]
  load_balancer_subnet_ids   = ["subnet-0000000000000000a", "subnet-0000000000000000b"]
  allowed_cidrs              = ["203.0.113.0/24", "2001:db8::/48"]
  bucket_name                = "test-artifacts"
  bucket_arn                 = "arn:aws:s3:::test-artifacts"
  database_address           = "test.abcdefghijkl.us-east-1.rds.amazonaws.com"
  database_security_group_id = "sg-0d0d0d0d0d0d0d0d0"
  database_secret_arn        = "arn:aws:secretsmanager:us-east-1:123456789012:secret:test/database-GhIjKl"
  kms_key_arn                = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
  admin_password             = "NotARealAdminPassword0123"
  flask_secret_key           = "NotARealFlaskSecretKey0123456789abcdef"
  # Empty: no single sign-on. (terraform test 1.11 fails an apply run whose optional
  # ephemeral variable is left unset: "was not set during the plan phase".)
  oidc_client_secret = ""
  # Most runs look at the plain-HTTP listener; run refuses_plain_http_unless_allowed shows
  # that without this (and without TLS) the plan fails.
  allow_plain_http = true
}

run "servers_require_imdsv2_and_encrypt_their_disks" {
  command = apply

  module {
    source = "./modules/server"
  }

  assert {
    condition     = aws_launch_template.this.metadata_options[0].http_tokens == "required" && aws_launch_template.this.metadata_options[0].http_endpoint == "enabled"
    error_message = "IMDSv2 (session tokens) must be required."
  }

  assert {
    condition     = aws_launch_template.this.metadata_options[0].http_put_response_hop_limit <= 2
    error_message = "The metadata service must not be reachable beyond the container on the server."
  }

  assert {
    condition     = aws_launch_template.this.block_device_mappings[0].device_name == "/dev/xvda" && aws_launch_template.this.block_device_mappings[0].ebs[0].encrypted == "true" && aws_launch_template.this.block_device_mappings[0].ebs[0].kms_key_id == var.kms_key_arn
    error_message = "The root volume must be encrypted with the stack's key."
  }

  assert {
    condition     = aws_launch_template.this.ebs_optimized == "true" && aws_launch_template.this.monitoring[0].enabled && aws_launch_template.this.update_default_version
    error_message = "EBS-optimized, detailed monitoring, and each new version the default expected."
  }

  assert {
    condition     = aws_launch_template.this.iam_instance_profile[0].arn == aws_iam_instance_profile.this.arn && aws_launch_template.this.network_interfaces[0].security_groups == toset([aws_security_group.this.id])
    error_message = "Servers must run with the stack's role, in their own security group only."
  }

  assert {
    condition     = aws_iam_role_policy_attachment.ssm.policy_arn == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    error_message = "The servers must be reachable through Session Manager."
  }
}

run "auto_scaling_group_heals_and_rolls_behind_the_load_balancer" {
  command = apply

  module {
    source = "./modules/server"
  }

  assert {
    condition     = aws_autoscaling_group.this.min_size == 2 && aws_autoscaling_group.this.desired_capacity == 2 && aws_autoscaling_group.this.max_size == 4
    error_message = "Two servers by default, room for an instance refresh."
  }

  assert {
    condition     = aws_autoscaling_group.this.health_check_type == "ELB" && aws_autoscaling_group.this.health_check_grace_period == 600 && aws_autoscaling_group.this.target_group_arns == toset([aws_lb_target_group.this.arn])
    error_message = "The group must replace servers that fail the load balancer's health check."
  }

  assert {
    condition     = aws_lb_target_group.this.health_check[0].path == "/health/live" && aws_lb_target_group.this.health_check[0].matcher == "200" && aws_lb_target_group.this.port == 5000
    error_message = "Health checks must ask each server's process on the MLflow port."
  }

  assert {
    condition     = aws_autoscaling_group.this.launch_template[0].id == aws_launch_template.this.id && aws_autoscaling_group.this.launch_template[0].version == tostring(aws_launch_template.this.latest_version)
    error_message = "The group must run the launch template's latest version."
  }

  # The rollout (terraform/scripts/roll-out.sh, run by the root) starts the refresh itself,
  # with the new version as its desired configuration; the provider's instance_refresh block
  # would first save the new version on the group, and a rollback would go back to it.
  assert {
    condition     = length(aws_autoscaling_group.this.instance_refresh) == 0
    error_message = "The group must not get the provider's instance refresh (its rollback would keep the new version)."
  }

  assert {
    condition = (jsondecode(output.rollout.PREFERENCES).MinHealthyPercentage == 100
      && jsondecode(output.rollout.PREFERENCES).MaxHealthyPercentage == 200
      && jsondecode(output.rollout.PREFERENCES).SkipMatching
      && jsondecode(output.rollout.PREFERENCES).InstanceWarmup == 600
    && jsondecode(output.rollout.PREFERENCES).AutoRollback)
    error_message = "A new launch template version must roll the servers, new ones first, and roll back by itself."
  }

  assert {
    condition = (jsondecode(output.rollout.DESIRED_CONFIGURATION).LaunchTemplate == { LaunchTemplateId = aws_launch_template.this.id, Version = tostring(aws_launch_template.this.latest_version) }
      && output.rollout.VERSION == tostring(aws_launch_template.this.latest_version)
    && output.rollout.GROUP == aws_autoscaling_group.this.name && output.rollout.REGION == "us-east-1")
    error_message = "The rollout names this group, this region and the template's latest version."
  }

  assert {
    condition     = toset(jsondecode(output.rollout.PREFERENCES).AlarmSpecification.Alarms) == toset(["test-rollout-target-5xx", "test-rollout-unhealthy-hosts"]) && toset(output.rollout_alarm_names) == toset(["test-rollout-target-5xx", "test-rollout-unhealthy-hosts"])
    error_message = "The rollout alarms must roll a refresh back."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.rollout["target-5xx"].metric_name == "HTTPCode_Target_5XX_Count" && aws_cloudwatch_metric_alarm.rollout["target-5xx"].threshold == 10
      && aws_cloudwatch_metric_alarm.rollout["unhealthy-hosts"].metric_name == "UnHealthyHostCount" && aws_cloudwatch_metric_alarm.rollout["unhealthy-hosts"].comparison_operator == "GreaterThanOrEqualToThreshold"
    && alltrue([for alarm in aws_cloudwatch_metric_alarm.rollout : alarm.namespace == "AWS/ApplicationELB" && alarm.dimensions == tomap({ LoadBalancer = aws_lb.this.arn_suffix, TargetGroup = aws_lb_target_group.this.arn_suffix }) && try(length(alarm.alarm_actions), 0) == 0]))
    error_message = "The rollout alarms watch this target group's 5XX and unhealthy hosts, and notify nobody."
  }

  assert {
    condition     = aws_launch_template.this.network_interfaces[0].associate_public_ip_address == "false"
    error_message = "Servers get no public address by default."
  }

  assert {
    condition     = contains(aws_autoscaling_group.this.enabled_metrics, "GroupInServiceInstances") && aws_autoscaling_group.this.wait_for_capacity_timeout == "0"
    error_message = "Group metrics feed the alarms; the first apply must not wait for an image that is not pushed yet."
  }

  assert {
    condition     = aws_autoscaling_group.this.vpc_zone_identifier == toset(var.subnet_ids)
    error_message = "Servers spread over the given subnets."
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

run "only_the_load_balancer_reaches_the_servers" {
  command = apply

  module {
    source = "./modules/server"
  }

  assert {
    condition     = toset([for rule in aws_vpc_security_group_ingress_rule.alb_ipv4 : rule.cidr_ipv4]) == toset(["203.0.113.0/24"]) && toset([for rule in aws_vpc_security_group_ingress_rule.alb_ipv6 : rule.cidr_ipv6]) == toset(["2001:db8::/48"])
    error_message = "The load balancer must be open to allowed_cidrs exactly."
  }

  assert {
    condition = alltrue([
      for rule in concat(values(aws_vpc_security_group_ingress_rule.alb_ipv4), values(aws_vpc_security_group_ingress_rule.alb_ipv6)) :
      rule.from_port == 80 && rule.to_port == 80 && rule.security_group_id == "sg-0b0b0b0b0b0b0b0b0"
    ])
    error_message = "Without TLS only port 80 of the load balancer may be open."
  }

  assert {
    condition = !anytrue([
      for rule in concat(values(aws_vpc_security_group_ingress_rule.alb_ipv4), values(aws_vpc_security_group_ingress_rule.alb_ipv6)) :
      contains(["0.0.0.0/0", "::/0"], coalesce(rule.cidr_ipv4, rule.cidr_ipv6))
    ])
    error_message = "No ingress from 0.0.0.0/0 or ::/0."
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.mlflow_from_load_balancer.referenced_security_group_id == "sg-0b0b0b0b0b0b0b0b0" && aws_vpc_security_group_ingress_rule.mlflow_from_load_balancer.security_group_id == "sg-0a0a0a0a0a0a0a0a0" && aws_vpc_security_group_ingress_rule.mlflow_from_load_balancer.from_port == 5000
    error_message = "The servers must admit the MLflow port from the load balancer's security group only."
  }

  assert {
    condition     = length(aws_security_group.this.ingress) == 0
    error_message = "The servers' group has no other ingress."
  }

  assert {
    condition     = aws_vpc_security_group_egress_rule.https.from_port == 443 && aws_vpc_security_group_egress_rule.postgres.referenced_security_group_id == var.database_security_group_id && aws_vpc_security_group_egress_rule.postgres.cidr_ipv4 == null
    error_message = "Egress is HTTPS, and PostgreSQL to the database's security group only."
  }

  assert {
    condition     = length(aws_lb_listener.http) == 1 && aws_lb_listener.http[0].port == 80 && aws_lb_listener.http[0].default_action[0].type == "forward" && length(aws_lb_listener.https) == 0 && length(aws_acm_certificate.this) == 0
    error_message = "Without a certificate, one plain HTTP listener forwards to the servers."
  }

  assert {
    condition     = !aws_lb.this.internal && aws_lb.this.drop_invalid_header_fields
    error_message = "An internet-facing load balancer that drops invalid headers expected."
  }

  assert {
    condition     = output.tracking_uri == "http://test-123456789.us-east-1.elb.amazonaws.com"
    error_message = "Clients use the load balancer's name: it stays the same when servers are replaced."
  }
}

run "user_data_writes_the_settings_contract" {
  command = apply

  module {
    source = "./modules/server"
  }

  variables {
    database_snapshot_id = "test-before-0-1-0"
  }

  assert {
    condition = alltrue([for line in [
      "POSTGRES_HOST=test.abcdefghijkl.us-east-1.rds.amazonaws.com\n",
      "POSTGRES_PORT=5432\n",
      "POSTGRES_SSLMODE=require\n",
      "POSTGRES_PASSWORD=\n",
      "POSTGRES_PASSWORD_FILE=\n",
      "POSTGRES_PASSWORD_SECRET_ARN=$${DB_SECRET_ARN}\n",
      "MLFLOW_STACK_S3_BUCKET=test-artifacts\n",
      "MLFLOW_STACK_S3_ENDPOINT_URL=\n",
      "MLFLOW_STACK_S3_ACCESS_KEY=\n",
      "MLFLOW_STACK_S3_SECRET_KEY=\n",
      "MLFLOW_STACK_S3_REGION=us-east-1\n",
      "MLFLOW_STACK_HOST=0.0.0.0\n",
      "MLFLOW_STACK_PORT=5000\n",
      "MLFLOW_STACK_ALLOWED_HOSTS=test-123456789.us-east-1.elb.amazonaws.com\n",
      "MLFLOW_STACK_TRUSTED_PROXIES=10.42.0.0/16\n",
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
    condition     = aws_launch_template.this.user_data == base64encode(output.user_data) && strcontains(output.user_data, "test-before-0-1-0")
    error_message = "The launch template carries the boot script, which names the snapshot taken before its image."
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

# Single sign-on: the OIDC settings reach the env file, the client secret only as the shell
# variable the boot script fills from the application secret.
run "single_sign_on_writes_the_oidc_settings_and_never_the_client_secret" {
  command = apply

  module {
    source = "./modules/server"
  }

  variables {
    certificate_arn    = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
    domain_name        = "mlflow.example.com"
    allow_plain_http   = false
    oidc_issuer        = "https://login.example.com/realms/ml"
    oidc_client_id     = "mlflow-server"
    oidc_client_secret = "NotARealClientSecret0123"
    oidc_admin_groups  = ["ml-admins", "platform"]
    oidc_group_permissions = {
      "ml-team" = "EDIT"
      analysts  = "READ:NO_PERMISSIONS"
    }
  }

  assert {
    condition = alltrue([for line in [
      "MLFLOW_STACK_AUTH_MODE=oidc\n",
      "MLFLOW_STACK_PUBLIC_URL=https://mlflow.example.com\n",
      "MLFLOW_STACK_OIDC_ISSUER=https://login.example.com/realms/ml\n",
      "MLFLOW_STACK_OIDC_CLIENT_ID=mlflow-server\n",
      "MLFLOW_STACK_OIDC_CLIENT_SECRET=$${MLFLOW_STACK_OIDC_CLIENT_SECRET}\n",
      "MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE=\n",
      "MLFLOW_STACK_OIDC_ADMIN_GROUPS=ml-admins,platform\n",
      "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS=analysts=READ:NO_PERMISSIONS,ml-team=EDIT\n",
      "MLFLOW_STACK_OIDC_SCOPES=openid profile email\n",
      "MLFLOW_STACK_OIDC_USERNAME_CLAIM=preferred_username\n",
      "MLFLOW_STACK_OIDC_GROUPS_CLAIM=groups\n",
      "MLFLOW_STACK_OIDC_AUDIENCE=\n",
      "MLFLOW_STACK_OIDC_SESSION_TTL=3600\n",
    ] : strcontains(output.user_data, line)])
    error_message = "With oidc_issuer the env file must switch to single sign-on: mode, public URL, issuer, client, groups, and the client secret as a shell variable."
  }

  assert {
    condition     = strcontains(output.user_data, "MLFLOW_STACK_OIDC_CLIENT_SECRET=$(secret_value \"$app\" MLFLOW_STACK_OIDC_CLIENT_SECRET \"$APP_SECRET_ARN\"")
    error_message = "prepare must fill MLFLOW_STACK_OIDC_CLIENT_SECRET from the application secret."
  }

  assert {
    condition     = !strcontains(output.user_data, "NotARealClientSecret") && !strcontains(aws_launch_template.this.user_data, base64encode("NotARealClientSecret")) && aws_launch_template.this.user_data == base64encode(output.user_data)
    error_message = "The client secret must never be in the user data of the launch template."
  }

  assert {
    condition     = aws_secretsmanager_secret_version.app.secret_string == null && aws_secretsmanager_secret_version.app.secret_string_wo_version == 1
    error_message = "The client secret must reach the application secret write-only, with the other secrets' version."
  }

  assert {
    condition     = output.auth_mode == "oidc" && output.oidc_redirect_uri == "https://mlflow.example.com/auth/callback" && output.oidc_post_logout_redirect_uri == "https://mlflow.example.com/"
    error_message = "The redirect URIs to register are <tracking_uri>/auth/callback and <tracking_uri>/."
  }
}

run "single_sign_on_names_the_load_balancer_without_a_domain_name" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    certificate_arn        = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
    oidc_issuer            = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0"
    oidc_client_id         = "11111111-1111-1111-1111-111111111111"
    oidc_client_secret     = "NotA.Real~Entra_Secret-0123"
    oidc_group_permissions = { "22222222-2222-2222-2222-222222222222" = "EDIT" }
  }

  assert {
    condition     = strcontains(output.user_data, "MLFLOW_STACK_PUBLIC_URL=https://test-123456789.us-east-1.elb.amazonaws.com\n") && output.oidc_redirect_uri == "https://test-123456789.us-east-1.elb.amazonaws.com/auth/callback"
    error_message = "Without domain_name the public URL is the load balancer's https:// name, as tracking_uri."
  }

  assert {
    condition     = strcontains(output.user_data, "MLFLOW_STACK_OIDC_ADMIN_GROUPS=\n") && strcontains(output.user_data, "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS=22222222-2222-2222-2222-222222222222=EDIT\n")
    error_message = "Group object IDs are group names like any other; no admin group leaves the setting empty."
  }
}

run "single_sign_on_settings_come_through_settings_too" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    certificate_arn    = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
    domain_name        = "mlflow.example.com"
    oidc_issuer        = "https://example.okta.com/oauth2/default"
    oidc_client_id     = "0oa1b2c3d4e5f6g7h8i9"
    oidc_client_secret = "NotARealOktaSecret0123"
    settings = {
      MLFLOW_STACK_OIDC_SCOPES            = "openid profile email groups"
      MLFLOW_STACK_OIDC_AUDIENCE          = "api://default"
      MLFLOW_STACK_OIDC_GROUP_PERMISSIONS = "ml-team=EDIT,analysts=READ:NO_PERMISSIONS"
      MLFLOW_STACK_OIDC_SESSION_TTL       = "600"
    }
  }

  assert {
    condition = alltrue([for line in [
      "MLFLOW_STACK_OIDC_SCOPES=openid profile email groups\n",
      "MLFLOW_STACK_OIDC_AUDIENCE=api://default\n",
      "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS=ml-team=EDIT,analysts=READ:NO_PERMISSIONS\n",
      "MLFLOW_STACK_OIDC_SESSION_TTL=600\n",
      "MLFLOW_STACK_AUTH_MODE=oidc\n",
    ] : strcontains(output.user_data, line)])
    error_message = "The user-settable single sign-on settings (scopes with spaces, an api:// audience, GROUP=PERMISSION lists) must reach the env file through settings."
  }
}

run "basic_auth_leaves_single_sign_on_off" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
    domain_name     = "mlflow.example.com"
  }

  assert {
    condition = alltrue([for line in [
      "MLFLOW_STACK_AUTH_MODE=basic\n",
      "MLFLOW_STACK_PUBLIC_URL=\n",
      "MLFLOW_STACK_OIDC_ISSUER=\n",
      "MLFLOW_STACK_OIDC_CLIENT_ID=\n",
      "MLFLOW_STACK_OIDC_CLIENT_SECRET=\n",
      "MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE=\n",
    ] : strcontains(output.user_data, line)])
    error_message = "Without oidc_issuer the servers use basic auth and every single sign-on setting Terraform sets is empty."
  }

  assert {
    condition     = !strcontains(output.user_data, "MLFLOW_STACK_OIDC_CLIENT_SECRET=$(") && output.auth_mode == "basic"
    error_message = "In basic mode prepare must not ask the application secret for a client secret (older secrets have none)."
  }
}

run "rejects_an_issuer_without_its_client" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    certificate_arn        = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
    oidc_issuer            = "https://login.example.com/realms/ml"
    oidc_group_permissions = { "ml-team" = "EDIT" }
  }

  expect_failures = [var.oidc_issuer]
}

run "rejects_a_client_without_an_issuer" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    certificate_arn    = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
    oidc_client_id     = "mlflow-server"
    oidc_client_secret = "NotARealClientSecret0123"
  }

  expect_failures = [var.oidc_issuer]
}

run "rejects_single_sign_on_over_plain_http" {
  command = plan

  module {
    source = "./modules/server"
  }

  # allow_plain_http = true and no certificate (the file's variables)
  variables {
    oidc_issuer            = "https://login.example.com/realms/ml"
    oidc_client_id         = "mlflow-server"
    oidc_client_secret     = "NotARealClientSecret0123"
    oidc_group_permissions = { "ml-team" = "EDIT" }
  }

  expect_failures = [var.oidc_issuer]
}

run "rejects_an_issuer_that_is_not_https" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    certificate_arn        = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
    oidc_issuer            = "http://login.example.com/realms/ml"
    oidc_client_id         = "mlflow-server"
    oidc_client_secret     = "NotARealClientSecret0123"
    oidc_group_permissions = { "ml-team" = "EDIT" }
  }

  expect_failures = [var.oidc_issuer]
}

run "rejects_a_client_secret_the_server_would_refuse" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    certificate_arn        = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
    oidc_issuer            = "https://login.example.com/realms/ml"
    oidc_client_id         = "mlflow-server"
    oidc_client_secret     = "Not$Real"
    oidc_group_permissions = { "ml-team" = "EDIT" }
  }

  expect_failures = [var.oidc_client_secret]
}

run "rejects_single_sign_on_without_any_group" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    certificate_arn    = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
    oidc_issuer        = "https://login.example.com/realms/ml"
    oidc_client_id     = "mlflow-server"
    oidc_client_secret = "NotARealClientSecret0123"
  }

  expect_failures = [var.oidc_group_permissions]
}

run "rejects_a_permission_that_is_none" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    oidc_group_permissions = { "ml-team" = "WRITE" }
  }

  expect_failures = [var.oidc_group_permissions]
}

run "rejects_a_group_name_with_a_comma" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    oidc_admin_groups = ["ml-admins,everyone"]
  }

  expect_failures = [var.oidc_admin_groups]
}

run "rejects_admin_groups_given_twice" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    oidc_admin_groups = ["ml-admins"]
    settings          = { MLFLOW_STACK_OIDC_ADMIN_GROUPS = "others" }
  }

  expect_failures = [var.oidc_admin_groups]
}

run "a_certificate_of_your_own_serves_https_and_redirects_http" {
  command = apply

  module {
    source = "./modules/server"
  }

  variables {
    certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
    domain_name     = "mlflow.example.com"
  }

  assert {
    condition     = length(aws_lb_listener.https) == 1 && aws_lb_listener.https[0].port == 443 && aws_lb_listener.https[0].protocol == "HTTPS" && aws_lb_listener.https[0].certificate_arn == var.certificate_arn
    error_message = "An HTTPS listener on 443 with the given certificate expected."
  }

  assert {
    condition     = startswith(aws_lb_listener.https[0].ssl_policy, "ELBSecurityPolicy-TLS13-1-2")
    error_message = "The listener must use a TLS 1.2/1.3 policy."
  }

  assert {
    condition = (length(aws_lb_listener.http) == 0 && length(aws_lb_listener.http_redirect) == 1
      && aws_lb_listener.http_redirect[0].default_action[0].type == "redirect"
      && aws_lb_listener.http_redirect[0].default_action[0].redirect[0].protocol == "HTTPS"
    && aws_lb_listener.http_redirect[0].default_action[0].redirect[0].status_code == "HTTP_301")
    error_message = "Port 80 must only redirect to HTTPS."
  }

  assert {
    condition     = toset([for rule in aws_vpc_security_group_ingress_rule.alb_ipv4 : "${rule.from_port} ${rule.cidr_ipv4}"]) == toset(["80 203.0.113.0/24", "443 203.0.113.0/24"])
    error_message = "The load balancer must admit HTTP (redirected) and HTTPS from allowed_cidrs only."
  }

  assert {
    condition     = length(aws_acm_certificate.this) == 0 && length(aws_route53_record.alias) == 0
    error_message = "With a certificate of your own, no certificate or record is created."
  }

  assert {
    condition     = output.tracking_uri == "https://mlflow.example.com" && strcontains(output.user_data, "MLFLOW_STACK_ALLOWED_HOSTS=mlflow.example.com,test-123456789.us-east-1.elb.amazonaws.com\n")
    error_message = "Clients use https://<domain_name>, and both names are allowed hosts."
  }
}

run "a_route53_zone_makes_tls_one_variable" {
  command = apply

  module {
    source = "./modules/server"
  }

  variables {
    route53_zone_id = "Z0123456789ABCDEFGHIJ"
    domain_name     = "mlflow.example.com"
  }

  assert {
    condition     = aws_acm_certificate.this[0].domain_name == "mlflow.example.com" && aws_acm_certificate.this[0].validation_method == "DNS"
    error_message = "A DNS-validated certificate for domain_name expected."
  }

  assert {
    condition     = aws_acm_certificate_validation.this[0].certificate_arn == aws_acm_certificate.this[0].arn && aws_lb_listener.https[0].certificate_arn == aws_acm_certificate_validation.this[0].certificate_arn
    error_message = "The HTTPS listener must use the certificate once validated."
  }

  assert {
    condition     = aws_route53_record.validation[0].zone_id == var.route53_zone_id && aws_route53_record.validation[0].type == "CNAME" && aws_route53_record.validation[0].records == toset(["_fedcba9876543210.acm-validations.aws."])
    error_message = "The certificate must be validated through a record in the zone."
  }

  assert {
    condition     = aws_route53_record.alias[0].zone_id == var.route53_zone_id && aws_route53_record.alias[0].name == "mlflow.example.com" && aws_route53_record.alias[0].type == "A" && one(aws_route53_record.alias[0].alias).name == "test-123456789.us-east-1.elb.amazonaws.com" && one(aws_route53_record.alias[0].alias).zone_id == "Z35SXDOTRQ7X7K"
    error_message = "domain_name must be an alias of the load balancer in the zone."
  }

  assert {
    condition     = length(aws_lb_listener.http_redirect) == 1 && length(aws_lb_listener.http) == 0 && output.tracking_uri == "https://mlflow.example.com"
    error_message = "HTTP must redirect to HTTPS, and clients use https://<domain_name>."
  }
}

run "access_logs_and_a_web_acl_when_given" {
  command = apply

  module {
    source = "./modules/server"
  }

  variables {
    access_logs = { bucket = "test-alb-logs", prefix = "alb" }
    web_acl_arn = "arn:aws:wafv2:us-east-1:123456789012:regional/webacl/test/0123abcd-0123-4567-89ab-0123456789ab"
  }

  assert {
    condition     = aws_lb.this.access_logs[0].enabled && aws_lb.this.access_logs[0].bucket == "test-alb-logs" && aws_lb.this.access_logs[0].prefix == "alb"
    error_message = "The load balancer must write its access logs to the given bucket and prefix."
  }

  assert {
    condition     = length(aws_wafv2_web_acl_association.this) == 1 && aws_wafv2_web_acl_association.this[0].web_acl_arn == var.web_acl_arn && aws_wafv2_web_acl_association.this[0].resource_arn == aws_lb.this.arn
    error_message = "web_acl_arn must be associated with the load balancer."
  }
}

run "no_access_logs_and_no_web_acl_by_default" {
  command = plan

  module {
    source = "./modules/server"
  }

  assert {
    condition     = !aws_lb.this.access_logs[0].enabled && length(aws_wafv2_web_acl_association.this) == 0
    error_message = "Without access_logs and web_acl_arn the module writes no logs and associates no web ACL."
  }
}

run "rejects_a_web_acl_that_is_not_regional" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    web_acl_arn = "arn:aws:wafv2:us-east-1:123456789012:global/webacl/test/0123abcd"
  }

  expect_failures = [var.web_acl_arn]
}

run "refuses_plain_http_unless_allowed" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    allow_plain_http = false
  }

  expect_failures = [var.allow_plain_http]
}

run "tls_needs_no_allow_plain_http" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    allow_plain_http = false
    certificate_arn  = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
  }

  assert {
    condition     = length(aws_lb_listener.https) == 1 && length(aws_lb_listener.http) == 0
    error_message = "With a certificate, HTTPS is served and port 80 only redirects."
  }
}

run "rejects_a_zone_without_a_domain_name" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    route53_zone_id = "Z0123456789ABCDEFGHIJ"
  }

  expect_failures = [var.route53_zone_id]
}

run "rejects_a_zone_and_a_certificate_together" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    route53_zone_id = "Z0123456789ABCDEFGHIJ"
    domain_name     = "mlflow.example.com"
    certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
  }

  expect_failures = [var.certificate_arn]
}

run "rejects_desired_capacity_outside_the_limits" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    desired_capacity = 5
  }

  expect_failures = [aws_autoscaling_group.this]
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
    condition     = aws_vpc_security_group_ingress_rule.alb_ipv4["80 0.0.0.0/0"].cidr_ipv4 == "0.0.0.0/0"
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

run "rejects_a_single_load_balancer_subnet" {
  command = plan

  module {
    source = "./modules/server"
  }

  variables {
    load_balancer_subnet_ids = ["subnet-0000000000000000a"]
  }

  expect_failures = [var.load_balancer_subnet_ids]
}
