# The artifacts module against a mocked AWS provider.

mock_provider "aws" {
  mock_resource "aws_s3_bucket" {
    defaults = {
      arn = "arn:aws:s3:::test-artifacts"
    }
  }
}

variables {
  bucket_name = "test-artifacts"
  kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
}

run "public_access_is_fully_blocked" {
  command = apply

  module {
    source = "./modules/artifacts"
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
}

run "encrypted_with_the_stack_key_and_versioned" {
  command = apply

  module {
    source = "./modules/artifacts"
  }

  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.this.rule).apply_server_side_encryption_by_default).sse_algorithm == "aws:kms"
    error_message = "Default encryption must be SSE-KMS."
  }

  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.this.rule).apply_server_side_encryption_by_default).kms_master_key_id == var.kms_key_arn
    error_message = "Default encryption must use the stack's key."
  }

  assert {
    condition     = one(aws_s3_bucket_versioning.this.versioning_configuration).status == "Enabled"
    error_message = "Versioning must be enabled."
  }

  assert {
    condition     = aws_s3_bucket.this.force_destroy == false
    error_message = "A bucket holding artifacts must not be destroyable by default."
  }
}

run "bucket_policy_denies_requests_without_tls" {
  command = apply

  module {
    source = "./modules/artifacts"
  }

  assert {
    condition = anytrue([
      for statement in jsondecode(aws_s3_bucket_policy.this.policy).Statement :
      statement.Effect == "Deny" && statement.Principal == "*" && statement.Action == "s3:*"
      && try(statement.Condition.Bool["aws:SecureTransport"], "") == "false"
      && toset(statement.Resource) == toset(["arn:aws:s3:::test-artifacts", "arn:aws:s3:::test-artifacts/*"])
    ])
    error_message = "The bucket policy must deny every request without TLS, on the bucket and its objects."
  }

  assert {
    condition     = alltrue([for statement in jsondecode(aws_s3_bucket_policy.this.policy).Statement : statement.Effect == "Deny"])
    error_message = "The bucket policy may only deny: access is granted by the instance role."
  }
}

run "noncurrent_versions_expire" {
  command = apply

  module {
    source = "./modules/artifacts"
  }

  assert {
    condition = anytrue([
      for rule in aws_s3_bucket_lifecycle_configuration.this.rule :
      rule.status == "Enabled" && try(rule.noncurrent_version_expiration[0].noncurrent_days, 0) == 90
    ])
    error_message = "Noncurrent versions must expire after 90 days by default."
  }

  assert {
    condition = anytrue([
      for rule in aws_s3_bucket_lifecycle_configuration.this.rule :
      rule.status == "Enabled" && length(rule.abort_incomplete_multipart_upload) == 1
    ])
    error_message = "Incomplete multipart uploads must be aborted."
  }
}

run "noncurrent_version_rule_can_be_turned_off" {
  command = apply

  module {
    source = "./modules/artifacts"
  }

  variables {
    noncurrent_version_expiration_days = null
  }

  assert {
    condition = alltrue([
      for rule in aws_s3_bucket_lifecycle_configuration.this.rule :
      rule.status == "Disabled" if length(rule.noncurrent_version_expiration) > 0
    ])
    error_message = "With null, no noncurrent-version rule may be enabled."
  }
}

run "rejects_an_invalid_bucket_name" {
  command = plan

  module {
    source = "./modules/artifacts"
  }

  variables {
    bucket_name = "Not_A_Bucket"
  }

  expect_failures = [var.bucket_name]
}
