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
