# The load balancer enables its access logs with a test write: whoever takes the bucket's name
# from here waits for the policy that allows the write (and the encryption it requires).
output "bucket_name" {
  description = "Name of the access log bucket: the aws_lb access_logs bucket. Available once the bucket policy allows log delivery."
  value       = aws_s3_bucket.this.bucket

  depends_on = [
    aws_s3_bucket_policy.this,
    aws_s3_bucket_server_side_encryption_configuration.this,
    aws_s3_bucket_ownership_controls.this,
  ]
}

output "bucket_id" {
  description = "ID of the access log bucket (its name), once the bucket policy allows log delivery."
  value       = aws_s3_bucket.this.id

  depends_on = [
    aws_s3_bucket_policy.this,
    aws_s3_bucket_server_side_encryption_configuration.this,
    aws_s3_bucket_ownership_controls.this,
  ]
}

output "bucket_arn" {
  description = "ARN of the access log bucket (for readers' IAM policies, e.g. Athena)."
  value       = aws_s3_bucket.this.arn
}

output "prefix" {
  description = "Key prefix of the logs: the aws_lb access_logs prefix (\"\" for none)."
  value       = var.prefix
}

output "log_path" {
  description = "Where the logs land: s3://<bucket>/<prefix>/AWSLogs/<account id>/elasticloadbalancing/<region>/."
  value       = "s3://${aws_s3_bucket.this.bucket}/${var.prefix == "" ? "" : "${var.prefix}/"}AWSLogs/${local.account_id}/elasticloadbalancing/${local.region}/"
}
