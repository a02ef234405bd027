output "address" {
  description = "Host name of the database (POSTGRES_HOST)."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "Port of the database (POSTGRES_PORT)."
  value       = aws_db_instance.this.port
}

output "endpoint" {
  description = "host:port of the database."
  value       = aws_db_instance.this.endpoint
}

output "db_name" {
  description = "The database created with the instance (POSTGRES_DB)."
  value       = var.db_name
}

output "username" {
  description = "The user the server connects as (POSTGRES_USER)."
  value       = var.username
}

output "instance_id" {
  description = "Identifier of the DB instance."
  value       = aws_db_instance.this.identifier
}

output "arn" {
  description = "ARN of the DB instance."
  value       = aws_db_instance.this.arn
}

output "security_group_id" {
  description = "Security group of the database."
  value       = aws_security_group.this.id
}

output "secret_arn" {
  description = "ARN of the Secrets Manager secret with the connection (JSON: username, password, host, port, dbname)."
  value       = aws_secretsmanager_secret.this.arn

  # Whoever reads the secret (the server's boot script) finds a value in it.
  depends_on = [aws_secretsmanager_secret_version.this]
}

output "resource_id" {
  description = "Resource ID of the DB instance (db-...): changes when the instance is replaced (a restore), survives renames; the source_dbi_resource_id of a point-in-time restore."
  value       = aws_db_instance.this.resource_id
}

output "allocated_storage" {
  description = "Storage of the DB instance in GiB as of the last refresh (storage autoscaling may have grown it past the variable)."
  value       = aws_db_instance.this.allocated_storage
}

output "log_group_names" {
  description = "CloudWatch log groups of the exported PostgreSQL logs (postgresql, upgrade)."
  value       = [for type in local.log_exports : aws_cloudwatch_log_group.this[type].name]
}

output "pre_migration_snapshot_id" {
  description = "Identifier of the pre-migration snapshot (null without pre_migration_snapshot_key)."
  value       = one(aws_db_snapshot.pre_migration[*].db_snapshot_identifier)
}

output "pre_migration_snapshot_arn" {
  description = "ARN of the pre-migration snapshot (null without pre_migration_snapshot_key). Make the server's launch template depend on it, so that a new image (which migrates the schema when it starts) is launched only after the snapshot exists."
  value       = one(aws_db_snapshot.pre_migration[*].db_snapshot_arn)
}
