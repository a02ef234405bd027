data "aws_partition" "current" {}

locals {
  major_version = split(".", var.engine_version)[0]

  # Logs RDS publishes to CloudWatch; their log groups are created here first (below).
  log_exports = ["postgresql", "upgrade"]

  restoring = var.snapshot_identifier != null || var.restore_to_point_in_time != null

  # "<name>-before-<key>": RDS snapshot identifiers are 1-255 letters, digits and hyphens,
  # start with a letter (the name does), never hold "--" nor end in "-", and are stored in
  # lower case (upper case here would show a difference, and a new snapshot, on every plan).
  pre_migration_key_slug = (var.pre_migration_snapshot_key == null ? null
    : trim(replace(lower(var.pre_migration_snapshot_key), "/[^a-z0-9]+/", "-"), "-")
  )
  pre_migration_snapshot_identifier = (local.pre_migration_key_slug == null ? null
    : replace(substr("${var.name}-before-${local.pre_migration_key_slug}", 0, 255), "/-+$/", "")
  )

  # The restore the configuration asks for and the one the instance was created with, in one
  # shape ("-" for an empty value), for the check block at the end.
  pitr_requested = var.restore_to_point_in_time == null ? null : {
    source_db_instance_identifier = coalesce(var.restore_to_point_in_time.source_db_instance_identifier, "-")
    source_dbi_resource_id        = coalesce(var.restore_to_point_in_time.source_dbi_resource_id, "-")
    restore_time                  = coalesce(var.restore_to_point_in_time.restore_time, "-")
    use_latest_restorable_time    = var.restore_to_point_in_time.use_latest_restorable_time == true
  }
  pitr_applied = length(aws_db_instance.this.restore_to_point_in_time) == 0 ? null : {
    source_db_instance_identifier = coalesce(aws_db_instance.this.restore_to_point_in_time[0].source_db_instance_identifier, "-")
    source_dbi_resource_id        = coalesce(aws_db_instance.this.restore_to_point_in_time[0].source_dbi_resource_id, "-")
    restore_time                  = coalesce(aws_db_instance.this.restore_to_point_in_time[0].restore_time, "-")
    use_latest_restorable_time    = aws_db_instance.this.restore_to_point_in_time[0].use_latest_restorable_time == true
  }
}

################################################################################
# Network: private subnets, and one way in (PostgreSQL from the clients' security group)
################################################################################

resource "aws_db_subnet_group" "this" {
  name_prefix = "${var.name}-"
  description = "Private subnets of the ${var.name} database"
  subnet_ids  = var.subnet_ids

  tags = var.tags
}

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-db-"
  description = "PostgreSQL of ${var.name}: reachable only from the MLflow server"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-db" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  security_group_id            = aws_security_group.this.id
  description                  = "PostgreSQL from the MLflow server"
  ip_protocol                  = "tcp"
  from_port                    = var.port
  to_port                      = var.port
  referenced_security_group_id = var.client_security_group_id

  tags = var.tags
}

################################################################################
# Parameters: TLS required, slow statements and DDL logged
################################################################################

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-postgres${local.major_version}-"
  family      = "postgres${local.major_version}"
  description = "PostgreSQL ${local.major_version} parameters of ${var.name}"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = tostring(var.log_min_duration_ms)
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

################################################################################
# Enhanced monitoring role
################################################################################

resource "aws_iam_role" "monitoring" {
  count = var.monitoring_interval > 0 ? 1 : 0

  name_prefix = "${var.name}-rds-mon-"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
    }]
  })

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  count = var.monitoring_interval > 0 ? 1 : 0

  role       = aws_iam_role.monitoring[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

################################################################################
# Log groups of the exported logs: created before the instance, so that RDS does not create
# them itself (unencrypted, kept forever); `terraform destroy` removes them
################################################################################

resource "aws_cloudwatch_log_group" "this" {
  for_each = toset(local.log_exports)

  name              = "/aws/rds/instance/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = var.tags
}

################################################################################
# The database
################################################################################

resource "aws_db_instance" "this" {
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class

  # A restore brings the snapshot's databases, master user and size: RDS ignores or refuses
  # these there (the postconditions below check the outcome). The provider still applies the
  # write-only password after the restore (a ModifyDBInstance), so the secret stays right.
  db_name  = local.restoring ? null : var.db_name
  username = var.username
  port     = var.port
  # Write-only: Terraform sends the generated password to RDS and never stores it. It changes
  # only when password_version does.
  password_wo         = var.master_password
  password_wo_version = var.password_version
  # Lets administrators use IAM tokens as well; the MLflow server uses the password.
  iam_database_authentication_enabled = true

  allocated_storage     = local.restoring ? null : var.allocated_storage
  max_allocated_storage = var.max_allocated_storage
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = var.kms_key_arn

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.this.id]
  publicly_accessible    = false
  multi_az               = var.multi_az
  parameter_group_name   = aws_db_parameter_group.this.name
  ca_cert_identifier     = var.ca_cert_identifier

  # null: an empty database; otherwise a restore (only when the instance is created or
  # replaced: see lifecycle).
  snapshot_identifier = var.snapshot_identifier

  dynamic "restore_to_point_in_time" {
    for_each = var.restore_to_point_in_time == null ? [] : [var.restore_to_point_in_time]

    content {
      source_db_instance_identifier = restore_to_point_in_time.value.source_db_instance_identifier
      source_dbi_resource_id        = restore_to_point_in_time.value.source_dbi_resource_id
      restore_time                  = restore_to_point_in_time.value.restore_time
      use_latest_restorable_time    = restore_to_point_in_time.value.use_latest_restorable_time ? true : null
    }
  }

  backup_retention_period   = var.backup_retention_period
  backup_window             = "03:00-04:00"
  maintenance_window        = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot     = true
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = var.skip_final_snapshot
  final_snapshot_identifier = var.skip_final_snapshot ? null : "${var.name}-final-snapshot"
  delete_automated_backups  = var.delete_automated_backups

  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = false
  apply_immediately           = var.apply_immediately

  enabled_cloudwatch_logs_exports       = local.log_exports
  monitoring_interval                   = var.monitoring_interval
  monitoring_role_arn                   = var.monitoring_interval > 0 ? aws_iam_role.monitoring[0].arn : null
  performance_insights_enabled          = var.performance_insights_enabled
  performance_insights_kms_key_id       = var.performance_insights_enabled ? var.kms_key_arn : null
  performance_insights_retention_period = var.performance_insights_enabled ? 7 : null

  tags = var.tags

  lifecycle {
    # Stated, though Terraform would force it anyway (the pre-migration snapshot below has it and
    # depends on this instance). A replacement creates the new instance first, under the same
    # identifier, which RDS refuses while the old one exists: no plan can delete the live
    # database to replace it. A restore renames the live instance first (README: restore drill).
    create_before_destroy = true

    # Restore arguments count when the instance is created or replaced only: setting one on a
    # live stack does nothing until `-replace`, and removing one later never replaces the
    # restored database with an empty one (restore_to_point_in_time would, without this).
    ignore_changes = [snapshot_identifier, restore_to_point_in_time]

    postcondition {
      condition     = self.username == var.username && self.db_name == var.db_name
      error_message = "The database has master user \"${self.username}\" and database \"${self.db_name}\", but the server is configured with username \"${var.username}\" and db_name \"${var.db_name}\": restore only snapshots of a database with the same username and db_name."
    }

    postcondition {
      condition     = self.storage_encrypted && self.kms_key_id == var.kms_key_arn
      error_message = "The database is encrypted with ${self.kms_key_id}, not with kms_key_arn (a restore keeps the key of its source): copy the snapshot with this stack's key first (aws rds copy-db-snapshot --kms-key-id)."
    }
  }

  timeouts {
    # A restore of a large database can take longer than the provider's 40 minutes.
    create = "2h"
  }

  # The log groups exist before RDS publishes to them.
  depends_on = [aws_iam_role_policy_attachment.monitoring, aws_cloudwatch_log_group.this]
}

################################################################################
# A manual snapshot before a schema migration: the root passes the server's image tag, and a new
# image migrates the schema when it starts. The snapshot is taken before the new launch template
# exists (the root makes the server depend on pre_migration_snapshot_arn). One is kept: a new key
# makes a new snapshot, and the previous one is deleted only once the new one is available.
################################################################################

resource "aws_db_snapshot" "pre_migration" {
  count = local.pre_migration_snapshot_identifier == null ? 0 : 1

  db_instance_identifier = aws_db_instance.this.identifier
  db_snapshot_identifier = local.pre_migration_snapshot_identifier

  tags = merge(var.tags, { PreMigrationKey = var.pre_migration_snapshot_key })

  lifecycle {
    create_before_destroy = true
    # A new snapshot only for a new key (not when the instance is renamed or restored).
    ignore_changes = [db_instance_identifier]
  }
}

################################################################################
# The connection secret (RDS's own secret layout), for the server and for administrators
################################################################################

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:Rotation is by raising password_version (no rotation Lambda to deploy and patch): Terraform sets a new generated password on RDS and in this secret, and the servers, which read the secret at each new connection and again when RDS refuses it, keep serving without being replaced.
  name_prefix             = "${var.name}/database-"
  description             = "PostgreSQL connection of ${var.name} (username, password, host, port, dbname)"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = var.tags
}

resource "aws_secretsmanager_secret_version" "this" {
  secret_id = aws_secretsmanager_secret.this.id
  # Write-only as well: the same generated password as the database, never in the state.
  secret_string_wo = jsonencode({
    engine   = "postgres"
    host     = aws_db_instance.this.address
    port     = aws_db_instance.this.port
    dbname   = var.db_name
    username = var.username
    password = var.master_password
  })
  secret_string_wo_version = var.password_version

  lifecycle {
    # A replaced database gets this run's password: write it again so the two agree.
    replace_triggered_by = [aws_db_instance.this.id]
  }
}

################################################################################
# A restore set in the variables but not performed is reported (a warning, not an error)
################################################################################

check "restore_applied" {
  assert {
    condition = (
      (var.snapshot_identifier == null ? true : aws_db_instance.this.snapshot_identifier == var.snapshot_identifier)
      && (local.pitr_requested == null ? true : local.pitr_applied == local.pitr_requested)
    )
    error_message = "snapshot_identifier or restore_to_point_in_time differs from the restore the database was created with, and changes nothing by itself. To restore, rename the live instance and apply with -replace=<this module>.aws_db_instance.this (README: restore drill); after a restore, remove both."
  }
}
