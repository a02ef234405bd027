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

  # Every alarm, by short key. Missing data: "breaching" where silence itself is a fault,
  # "notBreaching" for metrics published only when something happens (5XX counts) or that have
  # another alarm for their absence, "missing" for the database (a reboot in the maintenance
  # window neither fires nor clears an alarm; an outage shows in the 5XX and health alarms).
  alarms = {
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

  alarm_name          = "${var.name}-${replace(each.key, "_", "-")}"
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric_name
  dimensions          = each.value.dimensions
  statistic           = each.value.statistic
  comparison_operator = each.value.comparison_operator
  threshold           = each.value.threshold
  period              = each.value.period
  evaluation_periods  = each.value.evaluation_periods
  treat_missing_data  = each.value.treat_missing_data

  actions_enabled = true
  alarm_actions   = [aws_sns_topic.this.arn]
  ok_actions      = [aws_sns_topic.this.arn]

  tags = var.tags

  # Notifications need the policy that lets CloudWatch publish.
  depends_on = [aws_sns_topic_policy.this]
}
