variable "name" {
  description = "Name of the DB instance and prefix of its companions."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name)) && !strcontains(var.name, "--")
    error_message = "name must be 3-24 lowercase letters, digits or single hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC of the database."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (two or more, in different availability zones) for the DB subnet group."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids needs two or more subnets in different availability zones (an RDS requirement)."
  }
}

variable "client_security_group_id" {
  description = "The security group (the MLflow server's) whose members may connect; no other source is admitted."
  type        = string

  validation {
    condition     = can(regex("^sg-[0-9a-f]{8,17}$", var.client_security_group_id))
    error_message = "client_security_group_id must look like sg-0123456789abcdef0."
  }
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts storage, Performance Insights and the connection secret."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "master_password" {
  description = "Password of the master user (ephemeral: it reaches RDS and the secret, never the state). At least 16 characters, letters and digits."
  type        = string
  ephemeral   = true
  sensitive   = true

  validation {
    condition     = can(regex("^[A-Za-z0-9]{16,128}$", var.master_password))
    error_message = "master_password must be 16-128 letters and digits (the server's settings reject quotes, $, # and the like)."
  }
}

variable "password_version" {
  description = "Increase to send a new master_password to RDS and the secret (rotation)."
  type        = number
  default     = 1

  validation {
    condition     = var.password_version >= 1 && floor(var.password_version) == var.password_version
    error_message = "password_version must be a whole number, 1 or more."
  }
}

variable "engine_version" {
  description = "PostgreSQL version: a major version (e.g. \"15\", minor upgrades then happen automatically) or major.minor."
  type        = string
  default     = "15"

  validation {
    condition     = can(regex("^(1[3-9])(\\.[0-9]+)?$", var.engine_version))
    error_message = "engine_version must be a PostgreSQL version from 13 on, such as \"16\" or \"16.4\"."
  }
}

variable "instance_class" {
  description = "DB instance class, e.g. db.t4g.micro (2 vCPU burstable, 1 GiB)."
  type        = string
  default     = "db.t4g.micro"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.instance_class))
    error_message = "instance_class must be an RDS instance class such as db.t4g.micro."
  }
}

variable "allocated_storage" {
  description = "Initial storage in GiB (gp3)."
  type        = number
  default     = 20

  validation {
    condition     = var.allocated_storage >= 20 && var.allocated_storage <= 65536
    error_message = "allocated_storage must be between 20 and 65536 GiB."
  }
}

variable "max_allocated_storage" {
  description = "Upper limit of storage autoscaling in GiB (equal to allocated_storage to turn autoscaling off)."
  type        = number
  default     = 100

  validation {
    condition     = var.max_allocated_storage >= var.allocated_storage
    error_message = "max_allocated_storage must be at least allocated_storage."
  }
}

variable "port" {
  description = "TCP port of PostgreSQL."
  type        = number
  default     = 5432

  validation {
    condition     = var.port >= 1150 && var.port <= 65535
    error_message = "port must be between 1150 and 65535 (an RDS limit)."
  }
}

variable "username" {
  description = "Master user; the MLflow server connects as this user (POSTGRES_USER)."
  type        = string
  default     = "mlflow"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9_]{0,62}$", var.username)) && !contains(["admin", "postgres", "rdsadmin"], lower(var.username))
    error_message = "username must start with a letter, contain only letters, digits and _, and not be a reserved name (admin, postgres, rdsadmin)."
  }
}

variable "db_name" {
  description = "Database created with the instance (POSTGRES_DB); the server creates the auth database itself."
  type        = string
  default     = "mlflow"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9_]{0,62}$", var.db_name))
    error_message = "db_name must start with a letter and contain only letters, digits and _."
  }
}

variable "ca_cert_identifier" {
  description = "Certificate authority of the server certificate (null: the region's default for new instances)."
  type        = string
  default     = "rds-ca-rsa2048-g1"

  validation {
    condition     = var.ca_cert_identifier == null || contains(["rds-ca-rsa2048-g1", "rds-ca-rsa4096-g1", "rds-ca-ecc384-g1"], coalesce(var.ca_cert_identifier, "-"))
    error_message = "ca_cert_identifier must be null, rds-ca-rsa2048-g1, rds-ca-rsa4096-g1 or rds-ca-ecc384-g1."
  }
}

variable "backup_retention_period" {
  description = "Days of automated backups and point-in-time recovery (7-35)."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_period >= 7 && var.backup_retention_period <= 35 && floor(var.backup_retention_period) == var.backup_retention_period
    error_message = "backup_retention_period must be a whole number of days from 7 to 35: fewer leaves too little time to notice a mistake and restore."
  }
}

variable "multi_az" {
  description = "Keep a synchronous standby in a second availability zone (doubles the database cost)."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Refuse to delete the database (turn off, apply, then destroy to tear down)."
  type        = bool
  default     = true
}

variable "skip_final_snapshot" {
  description = "Delete without a final snapshot (only for throwaway environments)."
  type        = bool
  default     = false
}

variable "apply_immediately" {
  description = "Apply changes now rather than in the next maintenance window."
  type        = bool
  default     = false
}

variable "monitoring_interval" {
  description = "Seconds between enhanced monitoring samples (0 turns it off)."
  type        = number
  default     = 60

  validation {
    condition     = contains([0, 1, 5, 10, 15, 30, 60], var.monitoring_interval)
    error_message = "monitoring_interval must be one of 0, 1, 5, 10, 15, 30, 60."
  }
}

variable "performance_insights_enabled" {
  description = "Turn on Performance Insights (7 days of history are free)."
  type        = bool
  default     = true
}

variable "delete_automated_backups" {
  description = "Delete the automated backups with the instance (destroy, or the end of a restore). false keeps them for backup_retention_period (they are billed), so a deleted database can still be restored to a point in time."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Days CloudWatch Logs keeps the database's logs (postgresql, upgrade); a value CloudWatch accepts, e.g. 365."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

################################################################################
# Restores and the pre-migration snapshot (README: restore drill)
################################################################################

variable "snapshot_identifier" {
  description = "null: an empty database. Otherwise the DB snapshot (name or ARN; automated ones are rds:...) the database is restored from when the instance is created or replaced (-replace): setting it on a running stack changes nothing by itself, and removing it after the restore is safe."
  type        = string
  default     = null

  validation {
    condition     = var.snapshot_identifier == null || can(regex("^(arn:aws[a-z-]*:rds:[a-z0-9-]+:[0-9]{12}:snapshot:)?(rds:)?[A-Za-z][A-Za-z0-9-]{0,254}$", coalesce(var.snapshot_identifier, "-")))
    error_message = "snapshot_identifier must be a DB snapshot name (letters, digits, hyphens; rds:NAME for an automated one) or a snapshot ARN."
  }
}

variable "restore_to_point_in_time" {
  description = "null: no restore. Otherwise a point-in-time restore, when the instance is created or replaced (-replace): one source (source_db_instance_identifier, or source_dbi_resource_id, which outlives renames and deletions) and one time (restore_time, RFC 3339 such as 2025-01-31T09:30:00Z, or use_latest_restorable_time = true). Removing it after the restore is safe."
  type = object({
    source_db_instance_identifier = optional(string)
    source_dbi_resource_id        = optional(string)
    restore_time                  = optional(string)
    use_latest_restorable_time    = optional(bool, false)
  })
  default = null

  validation {
    condition     = var.restore_to_point_in_time == null || var.snapshot_identifier == null
    error_message = "Set snapshot_identifier or restore_to_point_in_time, not both."
  }

  validation {
    condition = var.restore_to_point_in_time == null ? true : (
      (var.restore_to_point_in_time.source_db_instance_identifier == null) != (var.restore_to_point_in_time.source_dbi_resource_id == null)
    )
    error_message = "restore_to_point_in_time needs exactly one source: source_db_instance_identifier or source_dbi_resource_id."
  }

  validation {
    condition = var.restore_to_point_in_time == null ? true : (
      (var.restore_to_point_in_time.restore_time != null) != var.restore_to_point_in_time.use_latest_restorable_time
    )
    error_message = "restore_to_point_in_time needs exactly one time: restore_time or use_latest_restorable_time = true."
  }

  validation {
    condition = var.restore_to_point_in_time == null ? true : (
      var.restore_to_point_in_time.restore_time == null ? true : can(formatdate("YYYY", var.restore_to_point_in_time.restore_time))
    )
    error_message = "restore_time must be an RFC 3339 timestamp such as 2025-01-31T09:30:00Z."
  }

  validation {
    condition = var.restore_to_point_in_time == null ? true : (
      (var.restore_to_point_in_time.source_db_instance_identifier == null ? true : can(regex("^[A-Za-z][A-Za-z0-9-]{0,62}$", var.restore_to_point_in_time.source_db_instance_identifier)))
      && (var.restore_to_point_in_time.source_dbi_resource_id == null ? true : can(regex("^db-[A-Z0-9]+$", var.restore_to_point_in_time.source_dbi_resource_id)))
    )
    error_message = "source_db_instance_identifier must be a DB instance identifier; source_dbi_resource_id a resource ID such as db-ABCDEFGHIJKLMNOPQRSTUVWXYZ."
  }
}

variable "pre_migration_snapshot_key" {
  description = "null: no pre-migration snapshot (and the previous one is deleted). Otherwise a manual snapshot <name>-before-<key> (lower case, runs of other characters made one hyphen) is taken whenever the key changes; the root passes the server's image tag (or reference). Exactly one is kept: the previous one is deleted after the new one exists."
  type        = string
  default     = null

  validation {
    condition     = var.pre_migration_snapshot_key == null || can(regex("^[A-Za-z0-9][A-Za-z0-9_.:@+=/-]{0,254}$", coalesce(var.pre_migration_snapshot_key, "-")))
    error_message = "pre_migration_snapshot_key must be 1-255 characters, letters, digits and _ . : @ + = / -, starting with a letter or digit (an image tag, digest or reference)."
  }
}

variable "log_min_duration_ms" {
  description = "Statements slower than this many milliseconds are logged (-1 turns it off)."
  type        = number
  default     = 1000

  validation {
    condition     = var.log_min_duration_ms >= -1
    error_message = "log_min_duration_ms must be -1 (off) or a number of milliseconds."
  }
}

variable "secret_recovery_window_days" {
  description = "Days a deleted connection secret can be restored (0 deletes it at once)."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or between 7 and 30."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
