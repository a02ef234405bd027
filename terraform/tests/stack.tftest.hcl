# The root configuration as a whole: how the parts are wired, the key policy, the alarms, and
# where the generated passwords may (not) appear. Plans only.
#
# Terraform 1.11's mock providers cannot serve ephemeral resources, and the root generates its
# passwords with one (aws_secretsmanager_random_password). So the provider here is real, pointed
# at a moto server (tests/terraform/test_mock_plans.py starts one and passes moto_url in a
# -var-file): it generates the three passwords; every data source and every value asserted on
# is overridden below, so nothing else is asked of the emulator.

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
  skip_region_validation      = true

  endpoints {
    acm            = var.moto_url
    autoscaling    = var.moto_url
    cloudwatch     = var.moto_url
    ec2            = var.moto_url
    ecr            = var.moto_url
    elbv2          = var.moto_url
    iam            = var.moto_url
    kms            = var.moto_url
    logs           = var.moto_url
    rds            = var.moto_url
    route53        = var.moto_url
    s3             = var.moto_url
    secretsmanager = var.moto_url
    sns            = var.moto_url
    ssm            = var.moto_url
    sts            = var.moto_url
  }
}

override_data {
  target          = data.aws_caller_identity.current
  override_during = plan
  values = {
    account_id = "123456789012"
  }
}

override_data {
  target          = data.aws_partition.current
  override_during = plan
  values = {
    partition = "aws"
  }
}

override_data {
  target          = data.aws_region.current
  override_during = plan
  values = {
    name = "us-east-1"
  }
}

# The account already has the Auto Scaling service-linked role.
override_data {
  target          = data.aws_iam_roles.autoscaling
  override_during = plan
  values = {
    arns  = ["arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"]
    names = ["AWSServiceRoleForAutoScaling"]
  }
}

override_data {
  target          = module.network.data.aws_availability_zones.available[0]
  override_during = plan
  values = {
    names = ["us-east-1a", "us-east-1b", "us-east-1c"]
  }
}

override_data {
  target          = module.server.data.aws_region.current
  override_during = plan
  values = {
    name = "us-east-1"
  }
}

override_data {
  target          = module.server.data.aws_partition.current
  override_during = plan
  values = {
    partition = "aws"
  }
}

override_data {
  target          = module.server.data.aws_ssm_parameter.ami[0]
  override_during = plan
  values = {
    insecure_value = "ami-0123456789abcdef0"
  }
}

override_data {
  target          = module.server.data.aws_vpc.this
  override_during = plan
  values = {
    cidr_block = "10.42.0.0/16"
  }
}

override_data {
  target          = module.alarms.data.aws_caller_identity.current
  override_during = plan
  values = {
    account_id = "123456789012"
  }
}

override_data {
  target          = module.alarms.data.aws_partition.current
  override_during = plan
  values = {
    partition = "aws"
  }
}

override_data {
  target          = module.alarms.data.aws_region.current
  override_during = plan
  values = {
    name = "us-east-1"
  }
}

override_data {
  target          = module.database.data.aws_partition.current
  override_during = plan
  values = {
    partition = "aws"
  }
}

override_data {
  target          = module.network.data.aws_caller_identity.current
  override_during = plan
  values = {
    account_id = "123456789012"
  }
}

# Known at plan time, so that the servers' data source for the VPC is read (overridden) then.
override_resource {
  target          = module.network.aws_vpc.this[0]
  override_during = plan
  values = {
    id         = "vpc-0123456789abcdef0"
    cidr_block = "10.42.0.0/16"
  }
}

override_resource {
  target          = aws_kms_key.this
  override_during = plan
  values = {
    arn    = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    key_id = "00000000-0000-0000-0000-000000000000"
  }
}

override_resource {
  target          = module.artifacts.aws_s3_bucket.this
  override_during = plan
  values = {
    id  = "mlflow-artifacts-123456789012-us-east-1"
    arn = "arn:aws:s3:::mlflow-artifacts-123456789012-us-east-1"
  }
}

override_resource {
  target          = module.database.aws_db_instance.this
  override_during = plan
  values = {
    identifier = "mlflow"
    address    = "mlflow.abcdefghijkl.us-east-1.rds.amazonaws.com"
    port       = 5432
  }
}

override_resource {
  target          = module.database.aws_secretsmanager_secret.this
  override_during = plan
  values = {
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mlflow/database-AbCdEf"
  }
}

override_resource {
  target          = module.server.aws_secretsmanager_secret.app
  override_during = plan
  values = {
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mlflow/mlflow-GhIjKl"
  }
}

override_resource {
  target          = module.server.aws_ecr_repository.this[0]
  override_during = plan
  values = {
    arn            = "arn:aws:ecr:us-east-1:123456789012:repository/mlflow/mlflow-server"
    repository_url = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow/mlflow-server"
  }
}

override_resource {
  target          = module.server.aws_lb.this
  override_during = plan
  values = {
    arn        = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/mlflow/0123456789abcdef"
    arn_suffix = "app/mlflow/0123456789abcdef"
    dns_name   = "mlflow-123456789.us-east-1.elb.amazonaws.com"
    zone_id    = "Z35SXDOTRQ7X7K"
  }
}

override_resource {
  target          = module.server.aws_lb_target_group.this
  override_during = plan
  values = {
    arn        = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/mlflow-server/fedcba9876543210"
    arn_suffix = "targetgroup/mlflow-server/fedcba9876543210"
  }
}

override_resource {
  target          = module.alarms.aws_sns_topic.this
  override_during = plan
  values = {
    arn = "arn:aws:sns:us-east-1:123456789012:mlflow-alarms"
  }
}

variables {
  allowed_cidrs = ["203.0.113.0/24"]
  # TLS or refuse: a plan without a certificate fails (run plain_http_needs_an_explicit_yes).
  certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"
}

# One plan of the root with its default variables serves every assertion that needs no other
# input (each run is a plan of the whole root: about 7 s of CPU here).
run "the_root_plans_as_wired_with_its_defaults" {
  command = plan

  # The key policy lets Auto Scaling and the alarms use the key.
  assert {
    condition = length([
      for statement in jsondecode(aws_kms_key.this.policy).Statement : statement
      if try(statement.Principal.AWS, "") == "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
      && contains(flatten([statement.Action]), "kms:GenerateDataKey*") && contains(flatten([statement.Action]), "kms:Decrypt")
    ]) == 1
    error_message = "The Auto Scaling service-linked role must be able to encrypt and decrypt the servers' volumes."
  }

  assert {
    condition = length([
      for statement in jsondecode(aws_kms_key.this.policy).Statement : statement
      if try(statement.Principal.AWS, "") == "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
      && flatten([statement.Action]) == ["kms:CreateGrant"] && try(statement.Condition.Bool["kms:GrantIsForAWSResource"], "") == "true"
    ]) == 1
    error_message = "The service-linked role may create grants for AWS resources only (attaching encrypted volumes)."
  }

  assert {
    condition = length([
      for statement in jsondecode(aws_kms_key.this.policy).Statement : statement
      if try(statement.Principal.Service, "") == "cloudwatch.amazonaws.com" && toset(flatten([statement.Action])) == toset(["kms:Decrypt", "kms:GenerateDataKey*"])
    ]) == 1
    error_message = "CloudWatch alarms must be able to publish to the encrypted topic."
  }

  assert {
    condition     = length(aws_iam_service_linked_role.autoscaling) == 0
    error_message = "An account that has the service-linked role must not get a second one."
  }

  # The parts are wired together.
  assert {
    condition     = output.tracking_uri == "https://mlflow-123456789.us-east-1.elb.amazonaws.com" && output.load_balancer_dns_name == "mlflow-123456789.us-east-1.elb.amazonaws.com"
    error_message = "The stable address is the load balancer's name."
  }

  assert {
    condition     = module.database.pre_migration_snapshot_id == "mlflow-before-0-1-0" && strcontains(module.server.user_data, "mlflow-before-0-1-0")
    error_message = "The image tag keys the pre-migration snapshot, and the servers' boot script waits for it."
  }

  assert {
    condition     = module.server.autoscaling_group_name == "mlflow-server" && output.autoscaling_group_name == "mlflow-server"
    error_message = "The servers' group is named after the stack."
  }

  assert {
    condition     = alltrue([for name in ["POSTGRES_HOST=mlflow.abcdefghijkl.us-east-1.rds.amazonaws.com\n", "MLFLOW_STACK_S3_BUCKET=mlflow-artifacts-123456789012-us-east-1\n", "MLFLOW_STACK_TRUSTED_PROXIES=10.42.0.0/16\n"] : strcontains(module.server.user_data, name)])
    error_message = "The servers must be pointed at this database, this bucket, and trust the load balancer in the VPC."
  }

  assert {
    condition     = toset(output.database_log_groups) == toset(["/aws/rds/instance/mlflow/postgresql", "/aws/rds/instance/mlflow/upgrade"])
    error_message = "The database's log groups are managed by Terraform."
  }

  # Every alarm notifies the topic, about this stack.
  assert {
    condition     = length(module.alarms.alarms) >= 8 && alltrue([for alarm in values(module.alarms.alarms) : alarm.alarm_actions == toset([module.alarms.sns_topic_arn]) || alarm.alarm_actions == [module.alarms.sns_topic_arn]])
    error_message = "Every alarm must notify the alarm topic."
  }

  assert {
    condition = alltrue([for alarm in values(module.alarms.alarms) : alltrue([
      for name, value in alarm.dimensions : contains([
        "mlflow-server",                              # the Auto Scaling group
        "app/mlflow/0123456789abcdef",                # the load balancer
        "targetgroup/mlflow-server/fedcba9876543210", # the target group
        "mlflow",                                     # the database
        var.certificate_arn,                          # the listener's certificate
      ], value)
    ])])
    error_message = "Every alarm must watch this stack's group, load balancer, target group or database."
  }

  # Evidence for incidents: access logs in their own bucket, the listener's certificate, the
  # response time and the database's latency watched.
  assert {
    condition     = output.access_logs_bucket == "mlflow-alb-logs-123456789012-us-east-1"
    error_message = "The load balancer's access logs go to the stack's own log bucket."
  }

  assert {
    condition     = module.alarms.alarms["certificate_expiry"].dimensions == tomap({ CertificateArn = var.certificate_arn }) && alltrue([for name in ["target_response_time", "db_read_latency", "db_write_latency", "db_cpu"] : contains(keys(module.alarms.alarms), name)])
    error_message = "With TLS the certificate's expiry is watched; p99 response time, database CPU and latency always."
  }

  assert {
    condition     = module.alarms.alarms["unhealthy_hosts"].dimensions == tomap({ LoadBalancer = "app/mlflow/0123456789abcdef", TargetGroup = "targetgroup/mlflow-server/fedcba9876543210" })
    error_message = "Target group metrics need both the TargetGroup and the LoadBalancer dimension."
  }

  assert {
    condition     = module.alarms.alarms["asg_in_service"].dimensions == tomap({ AutoScalingGroupName = "mlflow-server" }) && module.alarms.alarms["db_free_storage"].dimensions == tomap({ DBInstanceIdentifier = "mlflow" })
    error_message = "The group and database alarms must name this group and this database."
  }

  # The passwords never reach the user data. The generated passwords are ephemeral (here:
  # really generated, by moto): Terraform refuses them anywhere but in write-only arguments, so
  # the boot script can only name the shell variables that `prepare` fills from Secrets
  # Manager. (The moto apply reads the state file for them as well.)
  assert {
    condition = alltrue([for line in [
      "POSTGRES_PASSWORD=\n",
      "POSTGRES_PASSWORD_FILE=\n",
      "POSTGRES_PASSWORD_SECRET_ARN=$${DB_SECRET_ARN}\n",
      "MLFLOW_AUTH_ADMIN_PASSWORD=$${MLFLOW_AUTH_ADMIN_PASSWORD}\n",
      "MLFLOW_FLASK_SERVER_SECRET_KEY=$${MLFLOW_FLASK_SERVER_SECRET_KEY}\n",
    ] : strcontains(module.server.user_data, line)])
    error_message = "The env file must take every password from Secrets Manager at boot."
  }

  assert {
    condition     = !strcontains(module.server.user_data, "AWS_SECRET_ACCESS_KEY") && length(regexall("(?m)^(POSTGRES_PASSWORD|MLFLOW_AUTH_ADMIN_PASSWORD|MLFLOW_FLASK_SERVER_SECRET_KEY|MLFLOW_STACK_OIDC_CLIENT_SECRET)=[^$\n]", module.server.user_data)) == 0
    error_message = "No password or static key may be in the user data."
  }

  # Without oidc_issuer: MLflow's basic auth, and the single sign-on settings Terraform sets
  # stay empty.
  assert {
    condition     = output.auth_mode == "basic" && alltrue([for line in ["MLFLOW_STACK_AUTH_MODE=basic\n", "MLFLOW_STACK_PUBLIC_URL=\n", "MLFLOW_STACK_OIDC_ISSUER=\n", "MLFLOW_STACK_OIDC_CLIENT_ID=\n", "MLFLOW_STACK_OIDC_CLIENT_SECRET=\n"] : strcontains(module.server.user_data, line)])
    error_message = "Basic auth by default, with the single sign-on settings empty."
  }
}

# Without TLS the plan stops with one message naming route53_zone_id and certificate_arn...
run "plain_http_needs_an_explicit_yes" {
  command = plan

  variables {
    certificate_arn = null
  }

  expect_failures = [var.allow_plain_http]
}

# ...unless the operator says so (a load balancer reached only through a VPN).
run "plain_http_when_the_operator_says_so" {
  command = plan

  variables {
    certificate_arn  = null
    allow_plain_http = true
  }

  assert {
    condition     = !contains(keys(module.alarms.alarms), "certificate_expiry")
    error_message = "Without a certificate there is no expiry to watch."
  }

  assert {
    condition     = output.tracking_uri == "http://mlflow-123456789.us-east-1.elb.amazonaws.com" && module.server.certificate_arn == null
    error_message = "allow_plain_http = true without a certificate serves plain HTTP on port 80, and nothing on 443."
  }
}

run "a_missing_service_linked_role_is_named_at_plan_time" {
  command = plan

  override_data {
    target          = data.aws_iam_roles.autoscaling
    override_during = plan
    values = {
      arns  = []
      names = []
    }
  }

  expect_failures = [aws_kms_key.this]
}

run "the_service_linked_role_can_be_created" {
  command = plan

  override_data {
    target          = data.aws_iam_roles.autoscaling
    override_during = plan
    values = {
      arns  = []
      names = []
    }
  }

  variables {
    create_autoscaling_service_linked_role = true
  }

  assert {
    condition     = aws_iam_service_linked_role.autoscaling[0].aws_service_name == "autoscaling.amazonaws.com"
    error_message = "create_autoscaling_service_linked_role must create the role the key policy names."
  }
}

# Single sign-on through the root's variables: the settings reach the servers' env file, the
# client secret only as the shell variable the boot script fills from the application secret.
run "single_sign_on_reaches_the_servers" {
  command = plan

  variables {
    oidc_issuer            = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0"
    oidc_client_id         = "11111111-1111-1111-1111-111111111111"
    oidc_client_secret     = "NotA.Real~Entra_Secret-0123"
    oidc_admin_groups      = ["33333333-3333-3333-3333-333333333333"]
    oidc_group_permissions = { "22222222-2222-2222-2222-222222222222" = "EDIT" }
    settings               = { MLFLOW_STACK_OIDC_SESSION_TTL = "900" }
  }

  assert {
    condition = alltrue([for line in [
      "MLFLOW_STACK_AUTH_MODE=oidc\n",
      "MLFLOW_STACK_PUBLIC_URL=https://mlflow-123456789.us-east-1.elb.amazonaws.com\n",
      "MLFLOW_STACK_OIDC_ISSUER=https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0\n",
      "MLFLOW_STACK_OIDC_CLIENT_ID=11111111-1111-1111-1111-111111111111\n",
      "MLFLOW_STACK_OIDC_CLIENT_SECRET=$${MLFLOW_STACK_OIDC_CLIENT_SECRET}\n",
      "MLFLOW_STACK_OIDC_ADMIN_GROUPS=33333333-3333-3333-3333-333333333333\n",
      "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS=22222222-2222-2222-2222-222222222222=EDIT\n",
      "MLFLOW_STACK_OIDC_SESSION_TTL=900\n",
      "MLFLOW_STACK_OIDC_AUDIENCE=\n",
    ] : strcontains(module.server.user_data, line)])
    error_message = "The root's oidc_* variables must reach the servers' env file."
  }

  assert {
    condition     = !strcontains(module.server.user_data, "Entra_Secret") && output.auth_mode == "oidc" && output.oidc_redirect_uri == "https://mlflow-123456789.us-east-1.elb.amazonaws.com/auth/callback"
    error_message = "The client secret never reaches the user data; the redirect URI to register is <tracking_uri>/auth/callback."
  }
}

run "single_sign_on_needs_an_https_issuer" {
  command = plan

  variables {
    oidc_issuer            = "login.example.com"
    oidc_client_id         = "mlflow-server"
    oidc_client_secret     = "NotARealClientSecret0123"
    oidc_group_permissions = { "ml-team" = "EDIT" }
  }

  expect_failures = [var.oidc_issuer]
}
