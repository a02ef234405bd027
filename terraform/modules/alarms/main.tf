data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  gib = 1024 * 1024 * 1024
  mib = 1024 * 1024

  # Target group metrics need both dimensions: TargetGroup alone matches no metric.
  load_balancer = { LoadBalancer = var.load_balancer_arn_suffix }
  target_group  = { LoadBalancer = var.load_balancer_arn_suffix, TargetGroup = var.target_group_arn_suffix }
  database      = { DBInstanceIdentifier = var.db_instance_identifier }

  # Known at plan time even when certificate_arn is not (a conditional with a known condition
  # is its chosen branch; `unknown != null` would be unknown).
  certificate_expiry_alarm = var.certificate_expiry_alarm != null ? var.certificate_expiry_alarm : var.certificate_arn != null

  # What an alarm below may leave out: a percentile instead of a statistic (CloudWatch takes one
  # of statistic and extended_statistic, never both), and `create = false` for an alarm whose
  # resource is optional. Its key must stay known at plan time, so `create` may only depend on
  # whether a variable is set, not on a value another resource computes.
  alarm_defaults = {
    statistic                             = null
    extended_statistic                    = null
    evaluate_low_sample_count_percentiles = null
    create                                = true
  }

  # Every alarm, by short key. Missing data: "breaching" where silence itself is a fault,
  # "notBreaching" for metrics published only when something happens (5XX counts) or that have
  # another alarm for their absence, "missing" for the database (a reboot in the maintenance
  # window neither fires nor clears an alarm; an outage shows in the 5XX and health alarms).
  alarm_definitions = {
    asg_in_service = {
      namespace           = "AWS/AutoScaling"
      metric_name         = "GroupInServiceInstances"
      dimensions          = { AutoScalingGroupName = var.autoscaling_group_name }
      statistic           = "Minimum"
      comparison_operator = "LessThanThreshold"
      threshold           = var.min_in_service
      period              = 60
      evaluation_periods  = var.in_service_evaluation_minutes
      treat_missing_data  = "breaching"
      description         = "Fewer than ${var.min_in_service} MLflow servers in service in ${var.autoscaling_group_name} for ${var.in_service_evaluation_minutes} min (no data counts: the group must publish group metrics). Look at the group's activity history for failed launches (capacity, AMI, instance profile) and at the servers' logs for instances failing their health checks; check the instance refresh."
    }
    asg_status_check = {
      namespace           = "AWS/EC2"
      metric_name         = "StatusCheckFailed"
      dimensions          = { AutoScalingGroupName = var.autoscaling_group_name }
      statistic           = "Maximum"
      comparison_operator = "GreaterThanThreshold"
      threshold           = 0
      period              = 60
      evaluation_periods  = var.status_check_evaluation_minutes
      treat_missing_data  = "notBreaching"
      description         = "An instance of ${var.autoscaling_group_name} fails its EC2 status checks. The group replaces it when its health check marks it unhealthy; if it does not, terminate it (the group launches a new one), and look at the instance's console output and the AWS Health Dashboard."
    }
    alb_5xx = {
      namespace           = "AWS/ApplicationELB"
      metric_name         = "HTTPCode_ELB_5XX_Count"
      dimensions          = local.load_balancer
      statistic           = "Sum"
      comparison_operator = "GreaterThanThreshold"
      threshold           = var.elb_5xx_threshold
      period              = var.http_5xx_period_seconds
      evaluation_periods  = 1
      treat_missing_data  = "notBreaching"
      description         = "The load balancer answered more than ${var.elb_5xx_threshold} 5XX itself in ${var.http_5xx_period_seconds} s: 503 means no healthy server, 502/504 servers that fail or time out. Check the target group's health and the servers' logs; see the unhealthy-hosts and in-service alarms."
    }
    target_5xx = {
      namespace           = "AWS/ApplicationELB"
      metric_name         = "HTTPCode_Target_5XX_Count"
      dimensions          = local.target_group
      statistic           = "Sum"
      comparison_operator = "GreaterThanThreshold"
      threshold           = var.target_5xx_threshold
      period              = var.http_5xx_period_seconds
      evaluation_periods  = 1
      treat_missing_data  = "notBreaching"
      description         = "The MLflow servers answered more than ${var.target_5xx_threshold} 5XX in ${var.http_5xx_period_seconds} s. Read the servers' log group for tracebacks; typical causes are the database (connections, storage, credentials) and S3 access (role, KMS key)."
    }
    unhealthy_hosts = {
      namespace           = "AWS/ApplicationELB"
      metric_name         = "UnHealthyHostCount"
      dimensions          = local.target_group
      statistic           = "Maximum"
      comparison_operator = "GreaterThanThreshold"
      threshold           = 0
      period              = 60
      evaluation_periods  = var.unhealthy_host_evaluation_minutes
      treat_missing_data  = "notBreaching"
      description         = "A server has failed the target group's health check for ${var.unhealthy_host_evaluation_minutes} min. Open a session (SSM) on it and read `journalctl -u mlflow-stack` and the container log; the group replaces it if its health check type is ELB."
    }
    db_free_storage = {
      namespace           = "AWS/RDS"
      metric_name         = "FreeStorageSpace"
      dimensions          = local.database
      statistic           = "Minimum"
      comparison_operator = "LessThanThreshold"
      threshold           = var.db_free_storage_threshold_gib * local.gib
      period              = 300
      evaluation_periods  = 1
      treat_missing_data  = "missing"
      description         = "Database ${var.db_instance_identifier} has less than ${var.db_free_storage_threshold_gib} GiB free storage. Storage autoscaling may have hit max_allocated_storage: raise it (or allocated_storage), and run MLflow's garbage collection for deleted runs."
    }
    db_freeable_memory = {
      namespace           = "AWS/RDS"
      metric_name         = "FreeableMemory"
      dimensions          = local.database
      statistic           = "Average"
      comparison_operator = "LessThanThreshold"
      threshold           = var.db_freeable_memory_threshold_mib * local.mib
      period              = 300
      evaluation_periods  = var.db_evaluation_minutes / 5
      treat_missing_data  = "missing"
      description         = "Database ${var.db_instance_identifier} has had less than ${var.db_freeable_memory_threshold_mib} MiB freeable memory for ${var.db_evaluation_minutes} min. Check connections (each takes memory) and slow queries in Performance Insights; move to a larger instance class if it persists."
    }
    db_connections = {
      namespace           = "AWS/RDS"
      metric_name         = "DatabaseConnections"
      dimensions          = local.database
      statistic           = "Maximum"
      comparison_operator = "GreaterThanThreshold"
      threshold           = var.db_connections_threshold
      period              = 300
      evaluation_periods  = var.db_evaluation_minutes / 5
      treat_missing_data  = "missing"
      description         = "Database ${var.db_instance_identifier} has had more than ${var.db_connections_threshold} connections for ${var.db_evaluation_minutes} min (db.t4g.micro allows about 80-110, max_connections follows memory). Check the servers' worker count times their pool size, look for leaked connections (pg_stat_activity), or use a larger instance class."
    }
    db_cpu = {
      namespace           = "AWS/RDS"
      metric_name         = "CPUUtilization"
      dimensions          = local.database
      statistic           = "Average"
      comparison_operator = "GreaterThanThreshold"
      threshold           = var.db_cpu_threshold_percent
      period              = 300
      evaluation_periods  = var.db_evaluation_minutes / 5
      treat_missing_data  = "missing"
      description         = "Database ${var.db_instance_identifier} has been above ${var.db_cpu_threshold_percent} % CPU for ${var.db_evaluation_minutes} min. Find the expensive queries in Performance Insights or the slow-statement log; on a burstable class check CPUCreditBalance, and move to a larger class if the load is real."
    }
    # From the request leaving the load balancer to the first response header: an upload's
    # transfer counts (MLflow answers once it has the body), a download's does not. Percentiles
    # of a handful of requests say little: such periods leave the alarm's state as it is.
    target_response_time = {
      namespace                             = "AWS/ApplicationELB"
      metric_name                           = "TargetResponseTime"
      dimensions                            = local.load_balancer
      extended_statistic                    = "p99"
      evaluate_low_sample_count_percentiles = "ignore"
      comparison_operator                   = "GreaterThanThreshold"
      threshold                             = var.target_response_time_p99_threshold_seconds
      period                                = 300
      evaluation_periods                    = var.response_time_evaluation_minutes / 5
      treat_missing_data                    = "notBreaching"
      description                           = "1 % of the requests to the MLflow servers have taken more than ${var.target_response_time_p99_threshold_seconds} s to answer for ${var.response_time_evaluation_minutes} min (TargetResponseTime p99). Compare with the database latency and CPU alarms; then the servers' CPU and worker count (MLFLOW_STACK_WORKERS), and the slow routes in the servers' log group. Large artifact uploads count their transfer time: raise the threshold if your team logs large artifacts."
    }
    db_read_latency = {
      namespace           = "AWS/RDS"
      metric_name         = "ReadLatency"
      dimensions          = local.database
      statistic           = "Average"
      comparison_operator = "GreaterThanThreshold"
      threshold           = var.db_read_latency_threshold_seconds
      period              = 300
      evaluation_periods  = var.db_evaluation_minutes / 5
      treat_missing_data  = "missing"
      description         = "Database ${var.db_instance_identifier} has averaged more than ${var.db_read_latency_threshold_seconds * 1000} ms per disk read for ${var.db_evaluation_minutes} min. Reads reach the disk when the working set outgrows memory (FreeableMemory, the buffer cache hit ratio in Performance Insights) or a query scans a table; check ReadIOPS and ReadThroughput against the gp3 volume's baseline, then a larger class or provisioned IOPS."
    }
    db_write_latency = {
      namespace           = "AWS/RDS"
      metric_name         = "WriteLatency"
      dimensions          = local.database
      statistic           = "Average"
      comparison_operator = "GreaterThanThreshold"
      threshold           = var.db_write_latency_threshold_seconds
      period              = 300
      evaluation_periods  = var.db_evaluation_minutes / 5
      treat_missing_data  = "missing"
      description         = "Database ${var.db_instance_identifier} has averaged more than ${var.db_write_latency_threshold_seconds * 1000} ms per disk write for ${var.db_evaluation_minutes} min. Check WriteIOPS and WriteThroughput against the gp3 volume's baseline (bulk metric logging, a backup or a storage change in progress: the RDS events), and DiskQueueDepth; then provisioned IOPS or a larger class."
    }
    # ACM publishes DaysToExpiry once a day per certificate until it expires. No data counts as
    # breaching: a wrong ARN or region, or an expired or deleted certificate, must not be silent.
    certificate_expiry = {
      create              = local.certificate_expiry_alarm
      namespace           = "AWS/CertificateManager"
      metric_name         = "DaysToExpiry"
      dimensions          = { CertificateArn = var.certificate_arn }
      statistic           = "Minimum"
      comparison_operator = "LessThanThreshold"
      threshold           = var.certificate_expiry_threshold_days
      period              = 86400
      evaluation_periods  = 1
      treat_missing_data  = "breaching"
      description         = "The load balancer's certificate expires in less than ${var.certificate_expiry_threshold_days} days (or ACM publishes no DaysToExpiry for it: wrong ARN or region, expired or deleted). An ACM-issued certificate renews itself while its DNS validation record exists: check the record and the certificate's renewal status in ACM. An imported certificate must be reimported with a new one before it expires."
    }
  }

  alarms = {
    for key, alarm in local.alarm_definitions : key => merge(local.alarm_defaults, alarm)
    if try(alarm.create, true)
  }
}

################################################################################
# The topic: encrypted with the stack's key, published to by this account's alarms only
################################################################################

resource "aws_sns_topic" "this" {
  name              = "${var.name}-alarms"
  display_name      = "${var.name} alarms"
  kms_master_key_id = var.kms_key_arn

  tags = var.tags
}

resource "aws_sns_topic_policy" "this" {
  arn = aws_sns_topic.this.arn

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # What the default topic policy grants the owner, to this account's principals only.
        Sid       = "AccountManagesTheTopic"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action = [
          "sns:GetTopicAttributes",
          "sns:SetTopicAttributes",
          "sns:AddPermission",
          "sns:RemovePermission",
          "sns:DeleteTopic",
          "sns:Subscribe",
          "sns:ListSubscriptionsByTopic",
          "sns:Publish",
        ]
        Resource = aws_sns_topic.this.arn
      },
      {
        Sid       = "CloudWatchPublishesThisAccountsAlarms"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action    = "sns:Publish"
        Resource  = aws_sns_topic.this.arn
        Condition = {
          StringEquals = { "aws:SourceAccount" = local.account_id }
          ArnLike      = { "aws:SourceArn" = "arn:${local.partition}:cloudwatch:${local.region}:${local.account_id}:alarm:*" }
        }
      },
    ]
  })
}

resource "aws_sns_topic_subscription" "email" {
  for_each = toset(var.alarm_emails)

  topic_arn = aws_sns_topic.this.arn
  protocol  = "email"
  endpoint  = each.value
}

################################################################################
# The alarms: each notifies the topic when it fires and when it clears
################################################################################

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each = local.alarms

  alarm_name        = "${var.name}-${replace(each.key, "_", "-")}"
  alarm_description = each.value.description
  namespace         = each.value.namespace
  metric_name       = each.value.metric_name
  dimensions        = each.value.dimensions
  # One of the two: a statistic (Average, Minimum, ...) or a percentile (p99).
  statistic                             = each.value.statistic
  extended_statistic                    = each.value.extended_statistic
  evaluate_low_sample_count_percentiles = each.value.evaluate_low_sample_count_percentiles
  comparison_operator                   = each.value.comparison_operator
  threshold                             = each.value.threshold
  period                                = each.value.period
  evaluation_periods                    = each.value.evaluation_periods
  treat_missing_data                    = each.value.treat_missing_data

  actions_enabled = true
  alarm_actions   = [aws_sns_topic.this.arn]
  ok_actions      = [aws_sns_topic.this.arn]

  tags = var.tags

  # Notifications need the policy that lets CloudWatch publish.
  depends_on = [aws_sns_topic_policy.this]
}
