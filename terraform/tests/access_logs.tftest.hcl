# The access_logs module against a mocked AWS provider. The mocked values are used during plan
# as well (override_during), so every run is a plan.

mock_provider "aws" {
  override_during = plan

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }

  mock_data "aws_region" {
    defaults = {
      name = "us-east-1"
    }
  }

  # What the provider answers in us-east-1.
  mock_data "aws_elb_service_account" {
    defaults = {
      id  = "127311923021"
      arn = "arn:aws:iam::127311923021:root"
    }
  }

  mock_resource "aws_s3_bucket" {
    defaults = {
      arn = "arn:aws:s3:::test-alb-logs"
      id  = "test-alb-logs"
    }
  }
}

variables {
  bucket_name = "test-alb-logs"
}

run "encrypted_with_s3_managed_keys" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.this.rule).apply_server_side_encryption_by_default).sse_algorithm == "AES256"
    error_message = "Default encryption must be SSE-S3 (AES256): load balancers cannot write to a bucket whose default is SSE-KMS."
  }

  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.this.rule).apply_server_side_encryption_by_default).kms_master_key_id == null
    error_message = "No KMS key: ALB access logs support SSE-S3 only."
  }
}

run "public_access_is_fully_blocked_and_acls_are_off" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  assert {
    condition = alltrue([
      aws_s3_bucket_public_access_block.this.block_public_acls,
      aws_s3_bucket_public_access_block.this.block_public_policy,
      aws_s3_bucket_public_access_block.this.ignore_public_acls,
      aws_s3_bucket_public_access_block.this.restrict_public_buckets,
    ])
    error_message = "All four public access blocks must be on."
  }

  assert {
    condition     = one(aws_s3_bucket_ownership_controls.this.rule).object_ownership == "BucketOwnerEnforced"
    error_message = "ACLs must be disabled (BucketOwnerEnforced)."
  }

  assert {
    condition     = aws_s3_bucket.this.bucket == "test-alb-logs" && aws_s3_bucket.this.force_destroy == false
    error_message = "The bucket must have the given name and must not be destroyable while it holds logs by default."
  }
}

run "logs_expire_after_retention_days_and_deleted_ones_are_kept_a_while" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  assert {
    condition = anytrue([
      for rule in aws_s3_bucket_lifecycle_configuration.this.rule :
      rule.status == "Enabled" && try(one(rule.expiration).days, null) == 90 && try(one(rule.noncurrent_version_expiration).noncurrent_days, null) == 30
    ])
    error_message = "Log files must expire after retention_days (90), and their noncurrent versions 30 days later."
  }

  assert {
    condition = anytrue([
      for rule in aws_s3_bucket_lifecycle_configuration.this.rule :
      rule.status == "Enabled" && try(one(rule.abort_incomplete_multipart_upload).days_after_initiation, null) == 7
    ])
    error_message = "Incomplete multipart uploads must be aborted."
  }

  assert {
    condition = anytrue([
      for rule in aws_s3_bucket_lifecycle_configuration.this.rule :
      rule.status == "Enabled" && try(one(rule.expiration).expired_object_delete_marker, false) == true
    ])
    error_message = "Expired delete markers must be removed, or every expired log leaves one behind."
  }

  assert {
    condition     = aws_s3_bucket_lifecycle_configuration.this.bucket == aws_s3_bucket.this.id && alltrue([for rule in aws_s3_bucket_lifecycle_configuration.this.rule : length(rule.filter) == 1]) && toset(aws_s3_bucket_lifecycle_configuration.this.rule[*].id) == toset(["expire-logs", "abort-incomplete-multipart-uploads", "remove-expired-delete-markers"])
    error_message = "The lifecycle rules must belong to the log bucket and apply to all of it (an empty filter)."
  }

  assert {
    condition     = one(aws_s3_bucket_versioning.this.versioning_configuration).status == "Enabled"
    error_message = "Versioning must be on: a deleted log stays recoverable for 30 days."
  }
}

run "policy_lets_both_elb_principals_write_this_accounts_logs_only" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  assert {
    condition = toset([
      for statement in jsondecode(aws_s3_bucket_policy.this.policy).Statement : jsonencode(statement.Principal)
      if statement.Effect == "Allow"
      ]) == toset([
      jsonencode({ AWS = "arn:aws:iam::127311923021:root" }),
      jsonencode({ Service = "logdelivery.elasticloadbalancing.amazonaws.com" }),
    ])
    error_message = "Exactly the regional ELB account (us-east-1: 127311923021) and logdelivery.elasticloadbalancing.amazonaws.com may write."
  }

  assert {
    condition = alltrue([
      for statement in jsondecode(aws_s3_bucket_policy.this.policy).Statement :
      statement.Action == "s3:PutObject" && statement.Resource == "arn:aws:s3:::test-alb-logs/alb/AWSLogs/123456789012/*"
      if statement.Effect == "Allow"
    ])
    error_message = "Log delivery may only put objects under <bucket>/alb/AWSLogs/<this account>/."
  }

  assert {
    condition     = aws_s3_bucket_policy.this.bucket == aws_s3_bucket.this.id
    error_message = "The policy must belong to the log bucket."
  }
}

run "policy_denies_requests_without_tls" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  assert {
    condition = anytrue([
      for statement in jsondecode(aws_s3_bucket_policy.this.policy).Statement :
      statement.Effect == "Deny" && statement.Principal == "*" && statement.Action == "s3:*"
      && try(statement.Condition.Bool["aws:SecureTransport"], "") == "false"
      && try(toset(statement.Resource) == toset(["arn:aws:s3:::test-alb-logs", "arn:aws:s3:::test-alb-logs/*"]), false)
    ])
    error_message = "The bucket policy must deny every request without TLS, to the bucket and its objects."
  }

  assert {
    condition = anytrue([
      for statement in jsondecode(aws_s3_bucket_policy.this.policy).Statement :
      statement.Effect == "Deny" && try(statement.Condition.NumericLessThan["s3:TlsVersion"], "") == "1.2"
    ])
    error_message = "The bucket policy must deny TLS older than 1.2."
  }
}

run "a_region_without_an_elb_account_uses_the_service_principal_only" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  # ap-southeast-4 (Melbourne) opened in January 2023; the provider's aws_elb_service_account
  # fails there, so the module must not read it.
  override_data {
    target = data.aws_region.current
    values = {
      name = "ap-southeast-4"
    }
  }

  assert {
    condition     = length(data.aws_elb_service_account.this) == 0
    error_message = "The ELB account must not be looked up in a Region that has none."
  }

  assert {
    condition = [
      for statement in jsondecode(aws_s3_bucket_policy.this.policy).Statement : statement.Principal
      if statement.Effect == "Allow"
    ] == [{ Service = "logdelivery.elasticloadbalancing.amazonaws.com" }]
    error_message = "Newer Regions deliver logs through logdelivery.elasticloadbalancing.amazonaws.com only."
  }
}

run "retention_and_prefix_reach_the_lifecycle_and_the_policy" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  variables {
    retention_days = 400
    prefix         = "team/mlflow"
    force_destroy  = true
    tags           = { Project = "mlflow" }
  }

  assert {
    condition     = anytrue([for rule in aws_s3_bucket_lifecycle_configuration.this.rule : try(one(rule.expiration).days, null) == 400])
    error_message = "retention_days must reach the expiration rule."
  }

  assert {
    condition = alltrue([
      for statement in jsondecode(aws_s3_bucket_policy.this.policy).Statement :
      statement.Resource == "arn:aws:s3:::test-alb-logs/team/mlflow/AWSLogs/123456789012/*"
      if statement.Effect == "Allow"
    ])
    error_message = "The write grant must follow the prefix."
  }

  assert {
    condition     = output.prefix == "team/mlflow" && output.log_path == "s3://test-alb-logs/team/mlflow/AWSLogs/123456789012/elasticloadbalancing/us-east-1/"
    error_message = "The outputs must give the prefix and the path of the logs."
  }

  assert {
    condition     = aws_s3_bucket.this.force_destroy && aws_s3_bucket.this.tags == tomap({ Project = "mlflow" })
    error_message = "force_destroy and tags must reach the bucket."
  }
}

run "no_prefix_writes_under_awslogs" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  variables {
    prefix = ""
  }

  assert {
    condition = alltrue([
      for statement in jsondecode(aws_s3_bucket_policy.this.policy).Statement :
      statement.Resource == "arn:aws:s3:::test-alb-logs/AWSLogs/123456789012/*"
      if statement.Effect == "Allow"
    ])
    error_message = "Without a prefix the logs are written under AWSLogs/<account id>/ at the root (no leading slash)."
  }
}

run "outputs_name_the_bucket" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  assert {
    condition     = output.bucket_name == "test-alb-logs" && output.bucket_id == "test-alb-logs" && output.bucket_arn == "arn:aws:s3:::test-alb-logs" && output.prefix == "alb"
    error_message = "bucket_name, bucket_id, bucket_arn and prefix must describe the log bucket."
  }
}

run "rejects_a_retention_of_zero_days" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  variables {
    retention_days = 0
  }

  expect_failures = [var.retention_days]
}

run "rejects_a_fractional_retention" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  variables {
    retention_days = 1.5
  }

  expect_failures = [var.retention_days]
}

run "rejects_a_prefix_with_awslogs" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  variables {
    prefix = "alb/AWSLogs"
  }

  expect_failures = [var.prefix]
}

run "rejects_a_prefix_with_a_leading_slash" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  variables {
    prefix = "/alb"
  }

  expect_failures = [var.prefix]
}

run "rejects_an_invalid_bucket_name" {
  command = plan

  module {
    source = "./modules/access_logs"
  }

  variables {
    bucket_name = "Test_ALB_Logs"
  }

  expect_failures = [var.bucket_name]
}
