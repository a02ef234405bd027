data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  # ELB writes <bucket>/<prefix>/AWSLogs/<account id>/elasticloadbalancing/<region>/...; with no
  # prefix the path starts at AWSLogs.
  log_objects = "${aws_s3_bucket.this.arn}/${var.prefix == "" ? "" : "${var.prefix}/"}AWSLogs/${local.account_id}/*"

  # The Regions that AWS lists with a regional Elastic Load Balancing account (those available
  # before August 2022; the list is closed, newer Regions know only the service principal). The
  # provider's aws_elb_service_account fails in any other Region, so it is read only in these.
  elb_account_regions = [
    "af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1",
    "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ca-central-1", "cn-north-1",
    "cn-northwest-1", "eu-central-1", "eu-north-1", "eu-south-1", "eu-west-1", "eu-west-2",
    "eu-west-3", "me-south-1", "sa-east-1", "us-east-1", "us-east-2", "us-gov-east-1",
    "us-gov-west-1", "us-west-1", "us-west-2",
  ]
  has_elb_account = contains(local.elb_account_regions, local.region)

  # Versioning keeps a deleted or overwritten log for this many days: time to notice that
  # someone removed the evidence. Load balancers never overwrite a log, so it costs nothing else.
  noncurrent_version_days = 30
}

data "aws_elb_service_account" "this" {
  count = local.has_elb_account ? 1 : 0
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18:This bucket receives the load balancer's access logs; logging the access to it would need another bucket, whose access would need logging in turn. Enable CloudTrail S3 data events for an audit trail of reads.
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles the storage of logs kept for retention_days only; versioning keeps deleted logs for 30 days. Replicate if you need the logs to survive a regional outage.
  #checkov:skip=CKV2_AWS_62:Nothing consumes events of new log files; they are read when an incident is investigated (Athena, S3 Select or a download).
  #checkov:skip=CKV_AWS_145:Application Load Balancer access logs support SSE-S3 only, not SSE-KMS (AWS, Enable access logs for your Application Load Balancer, bucket requirements); the bucket is encrypted with SSE-S3 (AES256).
  bucket        = var.bucket_name
  force_destroy = var.force_destroy

  tags = var.tags
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket = aws_s3_bucket.this.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# No ACLs: the bucket owner owns every log file, access is decided by the policy only (log
# delivery needs no ACL).
resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# "The only server-side encryption option that's supported is Amazon S3-managed keys (SSE-S3)":
# https://docs.aws.amazon.com/elasticloadbalancing/latest/application/enable-access-logging.html
# (Step 1, bucket requirements). With SSE-KMS as the default the load balancer cannot write.
resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# Evidence should outlive an attempt to delete it: a deleted log stays a noncurrent version for
# noncurrent_version_days. Log files are written once, so versioning adds no copies otherwise.
resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    status = "Enabled"
  }
}

# What "Enable access logs for your Application Load Balancer" (Step 2) documents: the regional
# Elastic Load Balancing account (Regions available before August 2022) and the log delivery
# service principal (the others) may put objects under this account's log path, nothing else.
resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      local.has_elb_account ? [
        {
          Sid       = "RegionalElbAccountWritesLogs"
          Effect    = "Allow"
          Principal = { AWS = data.aws_elb_service_account.this[0].arn }
          Action    = "s3:PutObject"
          Resource  = local.log_objects
        },
      ] : [],
      [
        {
          Sid       = "ElbLogDeliveryWritesLogs"
          Effect    = "Allow"
          Principal = { Service = "logdelivery.elasticloadbalancing.amazonaws.com" }
          Action    = "s3:PutObject"
          Resource  = local.log_objects
        },
        {
          Sid       = "DenyInsecureTransport"
          Effect    = "Deny"
          Principal = "*"
          Action    = "s3:*"
          Resource  = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
          Condition = { Bool = { "aws:SecureTransport" = "false" } }
        },
        {
          Sid       = "DenyOutdatedTls"
          Effect    = "Deny"
          Principal = "*"
          Action    = "s3:*"
          Resource  = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
          Condition = { NumericLessThan = { "s3:TlsVersion" = "1.2" } }
        },
      ],
    )
  })

  # S3 rejects a policy while the public access block is being written.
  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "expire-logs"
    status = "Enabled"

    filter {}

    expiration {
      days = var.retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = local.noncurrent_version_days
    }
  }

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  # An expired log leaves a delete marker; once its noncurrent version is gone, so is the marker.
  rule {
    id     = "remove-expired-delete-markers"
    status = "Enabled"

    filter {}

    expiration {
      expired_object_delete_marker = true
    }
  }

  # Versioning must be on before a noncurrent-version rule is accepted.
  depends_on = [aws_s3_bucket_versioning.this]
}
