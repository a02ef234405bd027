data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_id  = data.aws_caller_identity.current.account_id
  partition   = data.aws_partition.current.partition
  region      = data.aws_region.current.name
  bucket_name = coalesce(var.bucket_name, "${var.name}-artifacts-${local.account_id}-${local.region}")
}

################################################################################
# The Auto Scaling service-linked role: it launches the servers, so it must be able to use the
# key of their encrypted volumes
################################################################################

data "aws_iam_roles" "autoscaling" {
  name_regex  = "^AWSServiceRoleForAutoScaling$"
  path_prefix = "/aws-service-role/autoscaling.amazonaws.com/"
}

resource "aws_iam_service_linked_role" "autoscaling" {
  count = var.create_autoscaling_service_linked_role ? 1 : 0

  aws_service_name = "autoscaling.amazonaws.com"
  description      = "Default service-linked role of Amazon EC2 Auto Scaling (created by mlflow-stack ${var.name})"
}

locals {
  autoscaling_role_arn = (var.create_autoscaling_service_linked_role
    ? aws_iam_service_linked_role.autoscaling[0].arn
    : "arn:${local.partition}:iam::${local.account_id}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
  )
}

################################################################################
# One customer-managed key for everything at rest: database, backups, bucket, secrets,
# root volume, image repository and logs
################################################################################

resource "aws_kms_key" "this" {
  description             = "mlflow-stack ${var.name}: data at rest"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # IAM policies of this account decide who uses the key (the default key policy).
        Sid       = "AccountAdministersTheKey"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        # The Auto Scaling group launches servers with root volumes encrypted with this key, as
        # its service-linked role (AWS: "Required KMS key policy for use with encrypted volumes").
        Sid       = "AutoScalingUsesTheKeyForServerVolumes"
        Effect    = "Allow"
        Principal = { AWS = local.autoscaling_role_arn }
        Action    = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
        Resource  = "*"
      },
      {
        Sid       = "AutoScalingAttachesEncryptedVolumes"
        Effect    = "Allow"
        Principal = { AWS = local.autoscaling_role_arn }
        Action    = "kms:CreateGrant"
        Resource  = "*"
        Condition = { Bool = { "kms:GrantIsForAWSResource" = "true" } }
      },
      {
        # Alarms publish to the encrypted SNS topic.
        Sid       = "CloudWatchAlarmsPublishToTheEncryptedTopic"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey*"]
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsEncryptsThisAccountsLogGroups"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"
          }
        }
      },
    ]
  })

  lifecycle {
    # KMS refuses a key policy that names a role that does not exist.
    precondition {
      condition     = var.create_autoscaling_service_linked_role || length(data.aws_iam_roles.autoscaling.arns) > 0
      error_message = "This account has no AWSServiceRoleForAutoScaling yet (it appears when Auto Scaling is first used). Set create_autoscaling_service_linked_role = true to create it."
    }
  }
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

################################################################################
# Generated secrets: ephemeral, so they reach RDS and Secrets Manager (write-only arguments)
# but never the plan or the state. New values are written only when a version variable grows.
################################################################################

ephemeral "aws_secretsmanager_random_password" "database" {
  password_length     = 40
  exclude_punctuation = true
}

ephemeral "aws_secretsmanager_random_password" "admin" {
  password_length     = 32
  exclude_punctuation = true
}

ephemeral "aws_secretsmanager_random_password" "flask_secret_key" {
  password_length     = 48
  exclude_punctuation = true
}

################################################################################
# The parts
################################################################################

module "network" {
  source = "./modules/network"

  name                     = var.name
  vpc_cidr                 = var.vpc_cidr
  availability_zones       = var.availability_zones
  vpc_id                   = var.vpc_id
  public_subnet_ids        = var.public_subnet_ids
  private_subnet_ids       = var.private_subnet_ids
  egress                   = var.server_egress
  enable_flow_logs         = var.enable_flow_logs
  flow_logs_retention_days = var.log_retention_days
  kms_key_arn              = aws_kms_key.this.arn
}

module "artifacts" {
  source = "./modules/artifacts"

  bucket_name                        = local.bucket_name
  kms_key_arn                        = aws_kms_key.this.arn
  noncurrent_version_expiration_days = var.noncurrent_version_expiration_days
  force_destroy                      = var.force_destroy
}

module "database" {
  source = "./modules/database"

  name                         = var.name
  vpc_id                       = module.network.vpc_id
  subnet_ids                   = module.network.private_subnet_ids
  client_security_group_id     = module.server.security_group_id
  kms_key_arn                  = aws_kms_key.this.arn
  master_password              = ephemeral.aws_secretsmanager_random_password.database.random_password
  password_version             = var.db_password_version
  instance_class               = var.db_instance_class
  engine_version               = var.db_engine_version
  allocated_storage            = var.db_allocated_storage
  max_allocated_storage        = var.db_max_allocated_storage
  backup_retention_period      = var.db_backup_retention_days
  multi_az                     = var.db_multi_az
  monitoring_interval          = var.db_monitoring_interval
  performance_insights_enabled = var.db_performance_insights_enabled
  ca_cert_identifier           = var.db_ca_cert_identifier
  apply_immediately            = var.db_apply_immediately
  deletion_protection          = var.deletion_protection
  skip_final_snapshot          = var.skip_final_snapshot
  secret_recovery_window_days  = var.secret_recovery_window_days
  log_retention_days           = var.log_retention_days
  snapshot_identifier          = var.db_snapshot_identifier
  restore_to_point_in_time     = var.db_restore_to_point_in_time
  # A new image may migrate the schema when it first starts: snapshot the database before.
  pre_migration_snapshot_key = var.db_snapshot_before_upgrade ? coalesce(var.image, var.image_tag) : null
}

module "access_logs" {
  source = "./modules/access_logs"

  bucket_name    = "${var.name}-alb-logs-${local.account_id}-${local.region}"
  prefix         = "alb"
  retention_days = var.access_logs_retention_days
  force_destroy  = var.force_destroy
}

module "server" {
  source = "./modules/server"

  name   = var.name
  vpc_id = module.network.vpc_id
  # The servers in private subnets, without public addresses; the load balancer alone is public.
  subnet_ids               = module.network.private_subnet_ids
  load_balancer_subnet_ids = module.network.public_subnet_ids
  allowed_cidrs            = var.allowed_cidrs
  allow_public_ingress     = var.allow_public_ingress
  certificate_arn          = var.certificate_arn
  allow_plain_http         = var.allow_plain_http
  route53_zone_id          = var.route53_zone_id
  domain_name              = var.domain_name
  deletion_protection      = var.deletion_protection
  web_acl_arn              = var.web_acl_arn
  # bucket_name is an output only once the bucket policy lets ELB write: the load balancer
  # is created (and its logs enabled, with a test write) after it.
  access_logs = {
    bucket = module.access_logs.bucket_name
    prefix = module.access_logs.prefix
  }

  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.desired_capacity
  health_check_grace_period = var.health_check_grace_period

  instance_type       = var.instance_type
  architecture        = var.architecture
  ami_id              = var.ami_id
  root_volume_size    = var.root_volume_size
  detailed_monitoring = var.detailed_monitoring
  image               = var.image
  image_tag           = var.image_tag
  force_destroy       = var.force_destroy

  bucket_name                = module.artifacts.bucket_name
  bucket_arn                 = module.artifacts.bucket_arn
  database_address           = module.database.address
  database_port              = module.database.port
  database_name              = module.database.db_name
  database_username          = module.database.username
  database_security_group_id = module.database.security_group_id
  database_secret_arn        = module.database.secret_arn
  database_snapshot_id       = module.database.pre_migration_snapshot_id
  kms_key_arn                = aws_kms_key.this.arn

  settings                    = var.settings
  oidc_issuer                 = var.oidc_issuer
  oidc_client_id              = var.oidc_client_id
  oidc_client_secret          = var.oidc_client_secret
  oidc_admin_groups           = var.oidc_admin_groups
  oidc_group_permissions      = var.oidc_group_permissions
  admin_password              = ephemeral.aws_secretsmanager_random_password.admin.random_password
  flask_secret_key            = ephemeral.aws_secretsmanager_random_password.flask_secret_key.random_password
  secrets_version             = var.secrets_version
  secret_recovery_window_days = var.secret_recovery_window_days
  log_retention_days          = var.log_retention_days
}

################################################################################
# Rollout: each new launch template version (image_tag, settings, AMI, secrets versions) goes
# to the servers through an instance refresh that rolls back by itself, and apply waits for it:
# a bad image fails the apply with the refresh's reason, the old servers still serving
################################################################################

resource "terraform_data" "rollout" {
  triggers_replace = [module.server.rollout.VERSION]

  input = merge(module.server.rollout, {
    TIMEOUT_SECONDS = tostring(var.rollout_timeout_minutes * 60)
  })

  provisioner "local-exec" {
    command     = "${path.root}/scripts/roll-out.sh"
    interpreter = ["bash"]
    environment = self.input
  }
}

module "alarms" {
  source = "./modules/alarms"

  name                     = var.name
  kms_key_arn              = aws_kms_key.this.arn
  alarm_emails             = var.alarm_emails
  autoscaling_group_name   = module.server.autoscaling_group_name
  min_in_service           = var.min_size
  load_balancer_arn_suffix = module.server.load_balancer_arn_suffix
  target_group_arn_suffix  = module.server.target_group_arn_suffix
  db_instance_identifier   = module.database.instance_id
  # The listener's certificate: its ARN is known after apply when this stack requests it
  # (route53_zone_id), so whether to watch it is decided from the variables.
  certificate_arn          = module.server.certificate_arn
  certificate_expiry_alarm = var.certificate_arn != null || var.route53_zone_id != null
}
