# The database module against a mocked AWS provider.

mock_provider "aws" {
  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/test-rds-monitoring"
    }
  }

  mock_resource "aws_security_group" {
    defaults = {
      id = "sg-0d0d0d0d0d0d0d0d0"
    }
  }
}

variables {
  name                     = "test"
  vpc_id                   = "vpc-0123456789abcdef0"
  subnet_ids               = ["subnet-0000000000000000c", "subnet-0000000000000000d"]
  client_security_group_id = "sg-0123456789abcdef0"
  kms_key_arn              = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
  master_password          = "NotARealPassword0123456789"
}

run "database_is_private_and_encrypted" {
  command = apply

  module {
    source = "./modules/database"
  }

  assert {
    condition     = aws_db_instance.this.publicly_accessible == false
    error_message = "The database must not be publicly accessible."
  }

  assert {
    condition     = aws_db_instance.this.storage_encrypted && aws_db_instance.this.kms_key_id == var.kms_key_arn
    error_message = "Storage must be encrypted with the stack's key."
  }

  assert {
    condition     = aws_db_subnet_group.this.subnet_ids == toset(var.subnet_ids) && aws_db_instance.this.db_subnet_group_name == aws_db_subnet_group.this.name
    error_message = "The database must live in the given private subnets."
  }

  assert {
    condition     = aws_db_instance.this.engine == "postgres" && aws_db_instance.this.ca_cert_identifier == "rds-ca-rsa2048-g1"
    error_message = "PostgreSQL with a current certificate authority expected."
  }

  assert {
    condition     = anytrue([for p in aws_db_parameter_group.this.parameter : p.name == "rds.force_ssl" && p.value == "1"]) && aws_db_instance.this.parameter_group_name == aws_db_parameter_group.this.name
    error_message = "Connections must be forced to TLS (rds.force_ssl = 1)."
  }
}

run "only_the_server_security_group_reaches_postgres" {
  command = apply

  module {
    source = "./modules/database"
  }

  assert {
    condition     = aws_db_instance.this.vpc_security_group_ids == toset([aws_security_group.this.id])
    error_message = "The database must be in its own security group only."
  }

  assert {
    condition     = length(aws_security_group.this.ingress) == 0
    error_message = "The security group may have no inline ingress rules."
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.clients.security_group_id == aws_security_group.this.id && aws_vpc_security_group_ingress_rule.clients.referenced_security_group_id == var.client_security_group_id
    error_message = "The only ingress rule must admit the server's security group."
  }

  assert {
    condition = (aws_vpc_security_group_ingress_rule.clients.cidr_ipv4 == null
      && aws_vpc_security_group_ingress_rule.clients.cidr_ipv6 == null
      && aws_vpc_security_group_ingress_rule.clients.prefix_list_id == null
    )
    error_message = "The ingress rule may not admit any address range."
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.clients.from_port == 5432 && aws_vpc_security_group_ingress_rule.clients.to_port == 5432 && aws_vpc_security_group_ingress_rule.clients.ip_protocol == "tcp"
    error_message = "Only PostgreSQL's port may be open."
  }
}

run "backups_and_protection_are_on_by_default" {
  command = apply

  module {
    source = "./modules/database"
  }

  assert {
    condition     = aws_db_instance.this.backup_retention_period == 7
    error_message = "Automated backups must be kept 7 days by default."
  }

  assert {
    condition     = aws_db_instance.this.deletion_protection && !aws_db_instance.this.skip_final_snapshot
    error_message = "Deletion protection and a final snapshot must be on by default."
  }

  assert {
    condition     = aws_db_instance.this.final_snapshot_identifier == "test-final-snapshot"
    error_message = "The final snapshot needs a name."
  }

  assert {
    condition     = aws_db_instance.this.copy_tags_to_snapshot && aws_db_instance.this.auto_minor_version_upgrade
    error_message = "Snapshots carry the tags; minor versions upgrade themselves."
  }
}

run "throwaway_environments_can_switch_protection_off" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    deletion_protection = false
    skip_final_snapshot = true
  }

  assert {
    condition     = !aws_db_instance.this.deletion_protection && aws_db_instance.this.skip_final_snapshot && aws_db_instance.this.final_snapshot_identifier == null
    error_message = "deletion_protection and skip_final_snapshot must reach the instance."
  }
}

run "password_never_reaches_the_state" {
  command = apply

  module {
    source = "./modules/database"
  }

  assert {
    condition     = aws_db_instance.this.password == null && aws_db_instance.this.password_wo == null && aws_db_instance.this.password_wo_version == 1
    error_message = "The password must travel only through the write-only argument."
  }

  assert {
    condition     = aws_db_instance.this.manage_master_user_password == null
    error_message = "RDS must not manage (and rotate) the password behind the server's back."
  }

  assert {
    condition     = aws_secretsmanager_secret_version.this.secret_string == null && aws_secretsmanager_secret_version.this.secret_string_wo_version == 1
    error_message = "The secret's value must be written only through the write-only argument."
  }

  assert {
    condition     = aws_secretsmanager_secret.this.kms_key_id == var.kms_key_arn && aws_secretsmanager_secret.this.recovery_window_in_days == 7
    error_message = "The secret must be encrypted with the stack's key and recoverable for 7 days."
  }
}

run "rejects_a_too_short_backup_retention" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    backup_retention_period = 1
  }

  expect_failures = [var.backup_retention_period]
}

run "rejects_turning_backups_off" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    backup_retention_period = 0
  }

  expect_failures = [var.backup_retention_period]
}

run "rejects_a_single_subnet" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    subnet_ids = ["subnet-0000000000000000c"]
  }

  expect_failures = [var.subnet_ids]
}

run "rejects_a_password_the_server_cannot_read" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    master_password = "has$dollar#and-quote'0123456789"
  }

  expect_failures = [var.master_password]
}

run "rejects_a_reserved_username" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    username = "postgres"
  }

  expect_failures = [var.username]
}

################################################################################
# Log groups: Terraform's, before the instance
################################################################################

run "log_groups_are_managed_encrypted_and_expire" {
  command = apply

  module {
    source = "./modules/database"
  }

  assert {
    condition     = toset(keys(aws_cloudwatch_log_group.this)) == aws_db_instance.this.enabled_cloudwatch_logs_exports
    error_message = "Every exported log needs its own log group, and only those."
  }

  assert {
    condition     = alltrue([for type, group in aws_cloudwatch_log_group.this : group.name == "/aws/rds/instance/${aws_db_instance.this.identifier}/${type}"])
    error_message = "The log groups must have the names RDS publishes to (/aws/rds/instance/<identifier>/<log>), or RDS creates its own."
  }

  assert {
    condition     = alltrue([for group in aws_cloudwatch_log_group.this : group.retention_in_days == 365 && group.kms_key_id == var.kms_key_arn])
    error_message = "The log groups must expire (365 days by default) and be encrypted with the stack's key."
  }

  assert {
    condition     = output.log_group_names == ["/aws/rds/instance/test/postgresql", "/aws/rds/instance/test/upgrade"]
    error_message = "log_group_names must list both log groups."
  }
}

run "log_retention_follows_the_variable" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    log_retention_days = 90
  }

  assert {
    condition     = alltrue([for group in aws_cloudwatch_log_group.this : group.retention_in_days == 90])
    error_message = "log_retention_days must reach the log groups."
  }
}

run "rejects_a_retention_cloudwatch_refuses" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    log_retention_days = 42
  }

  expect_failures = [var.log_retention_days]
}

run "rejects_logs_kept_forever" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    log_retention_days = 0
  }

  expect_failures = [var.log_retention_days]
}

################################################################################
# Restores
################################################################################

run "an_empty_database_by_default" {
  command = plan

  module {
    source = "./modules/database"
  }

  assert {
    condition     = length(aws_db_instance.this.restore_to_point_in_time) == 0 && aws_db_instance.this.db_name == "mlflow" && aws_db_instance.this.allocated_storage == 20
    error_message = "Without a restore the instance creates the database and its storage."
  }

  assert {
    condition     = aws_db_instance.this.delete_automated_backups == false
    error_message = "Automated backups must outlive the instance by default (point-in-time restores of a deleted database)."
  }
}

run "setting_a_restore_on_a_live_stack_changes_nothing_and_warns" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    snapshot_identifier = "test-before-0-2-0"
  }

  assert {
    condition     = aws_db_instance.this.snapshot_identifier != var.snapshot_identifier
    error_message = "A restore must not happen (nor replace the live database) without -replace."
  }

  expect_failures = [check.restore_applied]
}

run "restore_from_a_snapshot" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    snapshot_identifier = "test-before-0-2-0"
  }

  plan_options {
    replace = [aws_db_instance.this]
  }

  assert {
    condition     = aws_db_instance.this.snapshot_identifier == "test-before-0-2-0" && length(aws_db_instance.this.restore_to_point_in_time) == 0
    error_message = "snapshot_identifier must reach the replacement instance."
  }

  assert {
    condition     = aws_db_instance.this.identifier == "test" && aws_db_instance.this.username == "mlflow" && aws_db_instance.this.kms_key_id == var.kms_key_arn
    error_message = "The restored instance keeps the identifier (and so the address), the user and the key."
  }

  assert {
    condition     = aws_db_instance.this.password == null && aws_db_instance.this.password_wo == null && aws_db_instance.this.password_wo_version == 1
    error_message = "The restored instance gets the password through the write-only argument as well."
  }
}

run "restore_to_a_point_in_time" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    restore_to_point_in_time = {
      source_dbi_resource_id = "db-ABCDEFGHIJKLMNOPQRSTUVWXY0"
      restore_time           = "2025-01-31T09:30:00Z"
    }
  }

  plan_options {
    replace = [aws_db_instance.this]
  }

  assert {
    condition = (length(aws_db_instance.this.restore_to_point_in_time) == 1
      && aws_db_instance.this.restore_to_point_in_time[0].source_dbi_resource_id == "db-ABCDEFGHIJKLMNOPQRSTUVWXY0"
      && aws_db_instance.this.restore_to_point_in_time[0].restore_time == "2025-01-31T09:30:00Z"
      && aws_db_instance.this.restore_to_point_in_time[0].use_latest_restorable_time != true
      && aws_db_instance.this.restore_to_point_in_time[0].source_db_instance_identifier == null
    )
    error_message = "restore_to_point_in_time must reach the replacement instance as given."
  }
}

run "restore_to_the_latest_restorable_time" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    restore_to_point_in_time = {
      source_db_instance_identifier = "test-pre-restore"
      use_latest_restorable_time    = true
    }
  }

  plan_options {
    replace = [aws_db_instance.this]
  }

  assert {
    condition = (aws_db_instance.this.restore_to_point_in_time[0].source_db_instance_identifier == "test-pre-restore"
      && aws_db_instance.this.restore_to_point_in_time[0].use_latest_restorable_time == true
      && aws_db_instance.this.restore_to_point_in_time[0].restore_time == null
    )
    error_message = "use_latest_restorable_time must reach the instance, without a restore_time."
  }
}

run "rejects_a_snapshot_and_a_point_in_time_together" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    snapshot_identifier = "test-final-snapshot"
    restore_to_point_in_time = {
      source_db_instance_identifier = "test"
      use_latest_restorable_time    = true
    }
  }

  expect_failures = [var.restore_to_point_in_time]
}

run "rejects_a_point_in_time_without_a_source" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    restore_to_point_in_time = {
      restore_time = "2025-01-31T09:30:00Z"
    }
  }

  expect_failures = [var.restore_to_point_in_time]
}

run "rejects_a_point_in_time_with_two_sources" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    restore_to_point_in_time = {
      source_db_instance_identifier = "test"
      source_dbi_resource_id        = "db-ABCDEFGHIJKLMNOPQRSTUVWXY0"
      use_latest_restorable_time    = true
    }
  }

  expect_failures = [var.restore_to_point_in_time]
}

run "rejects_a_point_in_time_with_two_times" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    restore_to_point_in_time = {
      source_db_instance_identifier = "test"
      restore_time                  = "2025-01-31T09:30:00Z"
      use_latest_restorable_time    = true
    }
  }

  expect_failures = [var.restore_to_point_in_time]
}

run "rejects_a_point_in_time_without_a_time" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    restore_to_point_in_time = {
      source_db_instance_identifier = "test"
    }
  }

  expect_failures = [var.restore_to_point_in_time]
}

run "rejects_a_restore_time_that_is_not_rfc3339" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    restore_to_point_in_time = {
      source_db_instance_identifier = "test"
      restore_time                  = "2025-01-31 09:30"
    }
  }

  expect_failures = [var.restore_to_point_in_time]
}

run "rejects_a_malformed_snapshot_identifier" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    snapshot_identifier = "0.2.0 before migration"
  }

  expect_failures = [var.snapshot_identifier]
}

################################################################################
# The pre-migration snapshot
################################################################################

run "no_pre_migration_snapshot_without_a_key" {
  command = plan

  module {
    source = "./modules/database"
  }

  assert {
    condition     = length(aws_db_snapshot.pre_migration) == 0 && output.pre_migration_snapshot_id == null && output.pre_migration_snapshot_arn == null
    error_message = "Without pre_migration_snapshot_key there is no snapshot, and both outputs are null."
  }
}

run "pre_migration_snapshot_of_this_instance" {
  command = apply

  module {
    source = "./modules/database"
  }

  variables {
    pre_migration_snapshot_key = "0.2.0"
  }

  assert {
    condition     = aws_db_snapshot.pre_migration[0].db_snapshot_identifier == "test-before-0-2-0" && output.pre_migration_snapshot_id == "test-before-0-2-0"
    error_message = "The key 0.2.0 must give the snapshot test-before-0-2-0."
  }

  assert {
    condition     = aws_db_snapshot.pre_migration[0].db_instance_identifier == aws_db_instance.this.identifier
    error_message = "The snapshot must be taken of this database."
  }

  assert {
    condition     = output.pre_migration_snapshot_arn == aws_db_snapshot.pre_migration[0].db_snapshot_arn && output.pre_migration_snapshot_arn != null
    error_message = "pre_migration_snapshot_arn must name the snapshot (the server's launch template waits for it)."
  }

  assert {
    condition     = aws_db_snapshot.pre_migration[0].tags["PreMigrationKey"] == "0.2.0"
    error_message = "The snapshot must carry the key it was taken for."
  }
}

run "pre_migration_snapshot_name_of_a_release_candidate" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    pre_migration_snapshot_key = "v1.2.3-rc.1"
  }

  assert {
    condition     = output.pre_migration_snapshot_id == "test-before-v1-2-3-rc-1"
    error_message = "v1.2.3-rc.1 must give test-before-v1-2-3-rc-1."
  }
}

run "pre_migration_snapshot_name_is_lower_case_without_double_hyphens" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    pre_migration_snapshot_key = "Release_2025..01--Final-"
  }

  assert {
    condition     = output.pre_migration_snapshot_id == "test-before-release-2025-01-final"
    error_message = "The identifier must be lower case, with one hyphen for each run of other characters and none at the end."
  }
}

run "pre_migration_snapshot_name_of_a_digest" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    pre_migration_snapshot_key = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  }

  assert {
    condition = (output.pre_migration_snapshot_id == "test-before-sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
      && can(regex("^[a-z][a-z0-9-]{0,254}$", output.pre_migration_snapshot_id))
      && !strcontains(output.pre_migration_snapshot_id, "--")
    )
    error_message = "A digest must give a valid snapshot identifier."
  }
}

run "pre_migration_snapshot_name_of_an_image_reference" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    pre_migration_snapshot_key = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/test/mlflow-server:0.2.0"
  }

  assert {
    condition     = output.pre_migration_snapshot_id == "test-before-123456789012-dkr-ecr-eu-west-1-amazonaws-com-test-mlflow-server-0-2-0"
    error_message = "A full image reference must give a valid snapshot identifier."
  }
}

run "pre_migration_snapshot_name_is_cut_at_255_characters" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    # "<name>-before-" is 32 characters and the key 244: the 255th character is a hyphen.
    name                       = "a-name-of-twenty-four-ch"
    pre_migration_snapshot_key = "abc${join("", [for i in range(24) : "abcdefghi-"])}z"
  }

  assert {
    condition = (length(output.pre_migration_snapshot_id) == 254
      && can(regex("^[a-z][a-z0-9-]*[a-z0-9]$", output.pre_migration_snapshot_id))
      && !strcontains(output.pre_migration_snapshot_id, "--")
    )
    error_message = "The identifier must stay within 255 characters and must not end in a hyphen."
  }
}

run "rejects_a_pre_migration_key_without_letters_or_digits" {
  command = plan

  module {
    source = "./modules/database"
  }

  variables {
    pre_migration_snapshot_key = "..."
  }

  expect_failures = [var.pre_migration_snapshot_key]
}
