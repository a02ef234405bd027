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
