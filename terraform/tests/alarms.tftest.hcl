# The alarms module against a mocked AWS provider. The mocked values are used during plan as
# well (override_during), so every run is a plan.

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

  mock_resource "aws_sns_topic" {
    defaults = {
      arn = "arn:aws:sns:us-east-1:123456789012:test-alarms"
    }
  }
}

variables {
  name                     = "test"
  kms_key_arn              = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
  autoscaling_group_name   = "test-server"
  min_in_service           = 2
  load_balancer_arn_suffix = "app/test/0123456789abcdef"
  target_group_arn_suffix  = "targetgroup/test/fedcba9876543210"
  db_instance_identifier   = "test"
}

run "every_alarm_notifies_the_topic_when_it_fires_and_clears" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  assert {
    condition = toset(keys(aws_cloudwatch_metric_alarm.this)) == toset([
      "asg_in_service", "asg_status_check", "alb_5xx", "target_5xx", "unhealthy_hosts", "target_response_time",
      "db_free_storage", "db_freeable_memory", "db_connections", "db_cpu", "db_read_latency", "db_write_latency",
    ])
    error_message = "Twelve alarms expected without a certificate: group in service, status checks, ELB 5XX, target 5XX, unhealthy hosts, response time, and the database's storage, memory, connections, CPU and read and write latency."
  }

  assert {
    condition     = alltrue([for alarm in aws_cloudwatch_metric_alarm.this : (alarm.statistic == null) != (alarm.extended_statistic == null)])
    error_message = "Every alarm needs exactly one of statistic and extended_statistic (CloudWatch refuses both, and neither)."
  }

  assert {
    condition     = output.names == sort(values(output.alarm_names)) && length(output.names) == 12
    error_message = "names must list every alarm's name, sorted."
  }

  assert {
    condition     = aws_sns_topic.this.arn == "arn:aws:sns:us-east-1:123456789012:test-alarms"
    error_message = "The topic's (mocked) ARN must be known during plan, or the checks below prove nothing."
  }

  assert {
    condition     = alltrue([for alarm in aws_cloudwatch_metric_alarm.this : alarm.actions_enabled && alarm.alarm_actions == toset([aws_sns_topic.this.arn])])
    error_message = "Every alarm must notify the topic (and only the topic) when it fires."
  }

  assert {
    condition     = alltrue([for alarm in aws_cloudwatch_metric_alarm.this : alarm.ok_actions == toset([aws_sns_topic.this.arn])])
    error_message = "Every alarm must notify the topic when it clears."
  }

  assert {
    condition     = alltrue([for alarm in output.alarms : alarm.alarm_actions == toset([output.sns_topic_arn]) && alarm.ok_actions == toset([output.sns_topic_arn])])
    error_message = "The alarms output must show the topic in every alarm's actions."
  }

  assert {
    condition     = alltrue([for alarm in aws_cloudwatch_metric_alarm.this : length(alarm.alarm_description) >= 80 && length(alarm.alarm_description) <= 1024])
    error_message = "Every alarm needs a description that says what to do (CloudWatch allows 1024 characters)."
  }

  assert {
    condition     = alltrue([for key, name in output.alarm_names : name == "test-${replace(key, "_", "-")}"]) && length(distinct(values(output.alarm_names))) == 12
    error_message = "Alarms must be named <name>-<key>, each name once."
  }

  assert {
    condition     = keys(output.alarm_arns) == keys(output.alarms) && keys(output.alarm_names) == keys(output.alarms)
    error_message = "alarm_arns, alarm_names and alarms must have the same keys."
  }
}

run "each_alarm_watches_the_right_metric_and_dimensions" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["asg_in_service"].namespace == "AWS/AutoScaling"
      && aws_cloudwatch_metric_alarm.this["asg_in_service"].metric_name == "GroupInServiceInstances"
      && aws_cloudwatch_metric_alarm.this["asg_in_service"].dimensions == tomap({ AutoScalingGroupName = "test-server" })
    )
    error_message = "The in-service alarm must watch GroupInServiceInstances of the group."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["asg_status_check"].namespace == "AWS/EC2"
      && aws_cloudwatch_metric_alarm.this["asg_status_check"].metric_name == "StatusCheckFailed"
      && aws_cloudwatch_metric_alarm.this["asg_status_check"].dimensions == tomap({ AutoScalingGroupName = "test-server" })
    )
    error_message = "The status check alarm must watch StatusCheckFailed of the group's instances."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["alb_5xx"].namespace == "AWS/ApplicationELB"
      && aws_cloudwatch_metric_alarm.this["alb_5xx"].metric_name == "HTTPCode_ELB_5XX_Count"
      && aws_cloudwatch_metric_alarm.this["alb_5xx"].dimensions == tomap({ LoadBalancer = "app/test/0123456789abcdef" })
    )
    error_message = "The ELB 5XX alarm must watch HTTPCode_ELB_5XX_Count of the load balancer."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["target_5xx"].namespace == "AWS/ApplicationELB"
      && aws_cloudwatch_metric_alarm.this["target_5xx"].metric_name == "HTTPCode_Target_5XX_Count"
      && aws_cloudwatch_metric_alarm.this["target_5xx"].dimensions == tomap({ LoadBalancer = "app/test/0123456789abcdef", TargetGroup = "targetgroup/test/fedcba9876543210" })
    )
    error_message = "The target 5XX alarm must watch HTTPCode_Target_5XX_Count of the target group on the load balancer."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["unhealthy_hosts"].namespace == "AWS/ApplicationELB"
      && aws_cloudwatch_metric_alarm.this["unhealthy_hosts"].metric_name == "UnHealthyHostCount"
      && aws_cloudwatch_metric_alarm.this["unhealthy_hosts"].dimensions == tomap({ LoadBalancer = "app/test/0123456789abcdef", TargetGroup = "targetgroup/test/fedcba9876543210" })
    )
    error_message = "UnHealthyHostCount needs both the TargetGroup and the LoadBalancer dimension (with TargetGroup alone it matches no metric)."
  }

  assert {
    condition = alltrue([
      for key in ["db_free_storage", "db_freeable_memory", "db_connections", "db_cpu"] :
      aws_cloudwatch_metric_alarm.this[key].namespace == "AWS/RDS" && aws_cloudwatch_metric_alarm.this[key].dimensions == tomap({ DBInstanceIdentifier = "test" })
    ])
    error_message = "The database alarms must watch AWS/RDS metrics of the given instance only."
  }

  assert {
    condition = [for key in ["db_free_storage", "db_freeable_memory", "db_connections", "db_cpu"] : aws_cloudwatch_metric_alarm.this[key].metric_name] == [
      "FreeStorageSpace", "FreeableMemory", "DatabaseConnections", "CPUUtilization",
    ]
    error_message = "The database alarms must watch FreeStorageSpace, FreeableMemory, DatabaseConnections and CPUUtilization."
  }

  assert {
    condition     = output.alarms["unhealthy_hosts"].dimensions == aws_cloudwatch_metric_alarm.this["unhealthy_hosts"].dimensions && output.alarms["db_cpu"].namespace == "AWS/RDS" && output.alarms["db_cpu"].metric_name == "CPUUtilization"
    error_message = "The alarms output must show each alarm's metric and dimensions."
  }
}

run "default_thresholds_and_windows" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["asg_in_service"].threshold == 2
      && aws_cloudwatch_metric_alarm.this["asg_in_service"].comparison_operator == "LessThanThreshold"
      && aws_cloudwatch_metric_alarm.this["asg_in_service"].statistic == "Minimum"
      && aws_cloudwatch_metric_alarm.this["asg_in_service"].treat_missing_data == "breaching"
    )
    error_message = "Fewer than min_in_service servers in service (or no group metrics at all) must fire the alarm."
  }

  assert {
    condition = alltrue([
      for key in ["asg_status_check", "unhealthy_hosts"] :
      aws_cloudwatch_metric_alarm.this[key].statistic == "Maximum" && aws_cloudwatch_metric_alarm.this[key].comparison_operator == "GreaterThanThreshold" && aws_cloudwatch_metric_alarm.this[key].threshold == 0
    ])
    error_message = "A single failing or unhealthy instance must fire the status check and unhealthy host alarms (Maximum > 0)."
  }

  assert {
    condition = alltrue([
      for key in ["alb_5xx", "target_5xx"] :
      aws_cloudwatch_metric_alarm.this[key].statistic == "Sum" && aws_cloudwatch_metric_alarm.this[key].threshold == 10 && aws_cloudwatch_metric_alarm.this[key].period == 300 && aws_cloudwatch_metric_alarm.this[key].treat_missing_data == "notBreaching"
    ])
    error_message = "5XX alarms count (Sum) more than 10 in 5 min; no data means no errors."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["db_free_storage"].threshold == 2147483648
      && aws_cloudwatch_metric_alarm.this["db_free_storage"].comparison_operator == "LessThanThreshold"
    )
    error_message = "Free storage must alarm below 2 GiB, in bytes (2147483648)."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["db_freeable_memory"].threshold == 67108864
      && aws_cloudwatch_metric_alarm.this["db_freeable_memory"].comparison_operator == "LessThanThreshold"
    )
    error_message = "Freeable memory must alarm below 64 MiB, in bytes (67108864)."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["db_connections"].threshold == 80
      && aws_cloudwatch_metric_alarm.this["db_connections"].comparison_operator == "GreaterThanThreshold"
      && strcontains(aws_cloudwatch_metric_alarm.this["db_connections"].alarm_description, "db.t4g.micro allows about 80-110")
    )
    error_message = "Connections must alarm above 80, and say what db.t4g.micro allows."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["db_cpu"].threshold == 90
      && aws_cloudwatch_metric_alarm.this["db_cpu"].comparison_operator == "GreaterThanThreshold"
      && aws_cloudwatch_metric_alarm.this["db_cpu"].statistic == "Average"
      && aws_cloudwatch_metric_alarm.this["db_cpu"].period * aws_cloudwatch_metric_alarm.this["db_cpu"].evaluation_periods == 900
    )
    error_message = "Database CPU must alarm above 90 % for 15 minutes."
  }

  assert {
    condition     = alltrue([for alarm in aws_cloudwatch_metric_alarm.this : alarm.period * alarm.evaluation_periods <= 86400])
    error_message = "CloudWatch evaluates at most one day."
  }
}

run "thresholds_are_converted_to_the_metric_units" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    min_in_service                   = 3
    db_free_storage_threshold_gib    = 5
    db_freeable_memory_threshold_mib = 128
    db_connections_threshold         = 150
    db_cpu_threshold_percent         = 75
    db_evaluation_minutes            = 30
    http_5xx_period_seconds          = 60
    elb_5xx_threshold                = 0
    target_5xx_threshold             = 25
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.this["db_free_storage"].threshold == 5 * 1073741824
    error_message = "db_free_storage_threshold_gib must be converted to bytes (GiB x 1073741824)."
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.this["db_freeable_memory"].threshold == 128 * 1048576
    error_message = "db_freeable_memory_threshold_mib must be converted to bytes (MiB x 1048576)."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["db_connections"].threshold == 150
      && aws_cloudwatch_metric_alarm.this["db_cpu"].threshold == 75
      && aws_cloudwatch_metric_alarm.this["db_cpu"].evaluation_periods == 6
      && aws_cloudwatch_metric_alarm.this["db_freeable_memory"].evaluation_periods == 6
    )
    error_message = "The database thresholds and window (30 min = 6 periods of 5 min) must reach the alarms."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["asg_in_service"].threshold == 3
      && aws_cloudwatch_metric_alarm.this["alb_5xx"].threshold == 0
      && aws_cloudwatch_metric_alarm.this["target_5xx"].threshold == 25
      && aws_cloudwatch_metric_alarm.this["target_5xx"].period == 60
    )
    error_message = "min_in_service and the 5XX thresholds and window must reach the alarms."
  }
}

run "response_time_alarm_watches_the_p99_of_the_load_balancer" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["target_response_time"].namespace == "AWS/ApplicationELB"
      && aws_cloudwatch_metric_alarm.this["target_response_time"].metric_name == "TargetResponseTime"
      && aws_cloudwatch_metric_alarm.this["target_response_time"].dimensions == tomap({ LoadBalancer = "app/test/0123456789abcdef" })
    )
    error_message = "The response time alarm must watch TargetResponseTime of the load balancer."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["target_response_time"].extended_statistic == "p99"
      && aws_cloudwatch_metric_alarm.this["target_response_time"].statistic == null
      && aws_cloudwatch_metric_alarm.this["target_response_time"].evaluate_low_sample_count_percentiles == "ignore"
    )
    error_message = "The response time alarm must use the p99 percentile (extended_statistic, no statistic) and leave its state alone on too few requests."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["target_response_time"].threshold == 2
      && aws_cloudwatch_metric_alarm.this["target_response_time"].comparison_operator == "GreaterThanThreshold"
      && aws_cloudwatch_metric_alarm.this["target_response_time"].period == 300
      && aws_cloudwatch_metric_alarm.this["target_response_time"].evaluation_periods == 3
      && aws_cloudwatch_metric_alarm.this["target_response_time"].treat_missing_data == "notBreaching"
    )
    error_message = "The response time alarm must fire above 2 s for 3 periods of 5 min; no requests is no slowness."
  }

  assert {
    condition     = output.alarms["target_response_time"].extended_statistic == "p99" && output.alarms["target_response_time"].threshold == 2
    error_message = "The alarms output must show the percentile and the threshold."
  }
}

run "database_latency_alarms_watch_reads_and_writes_in_seconds" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  assert {
    condition = alltrue([
      for key, metric in { db_read_latency = "ReadLatency", db_write_latency = "WriteLatency" } :
      aws_cloudwatch_metric_alarm.this[key].namespace == "AWS/RDS"
      && aws_cloudwatch_metric_alarm.this[key].metric_name == metric
      && aws_cloudwatch_metric_alarm.this[key].dimensions == tomap({ DBInstanceIdentifier = "test" })
      && aws_cloudwatch_metric_alarm.this[key].statistic == "Average"
      && aws_cloudwatch_metric_alarm.this[key].extended_statistic == null
    ])
    error_message = "The latency alarms must watch the average ReadLatency and WriteLatency of the given instance."
  }

  assert {
    condition = alltrue([
      for key in ["db_read_latency", "db_write_latency"] :
      aws_cloudwatch_metric_alarm.this[key].threshold == 0.02
      && aws_cloudwatch_metric_alarm.this[key].comparison_operator == "GreaterThanThreshold"
      && aws_cloudwatch_metric_alarm.this[key].period * aws_cloudwatch_metric_alarm.this[key].evaluation_periods == 900
      && aws_cloudwatch_metric_alarm.this[key].treat_missing_data == "missing"
    ])
    error_message = "The latency alarms must fire above 0.02 s (20 ms, the metric's unit is seconds) for 15 min."
  }

  assert {
    condition     = strcontains(aws_cloudwatch_metric_alarm.this["db_read_latency"].alarm_description, "more than 20 ms") && strcontains(aws_cloudwatch_metric_alarm.this["db_write_latency"].alarm_description, "more than 20 ms")
    error_message = "The latency descriptions must give the threshold in milliseconds."
  }
}

run "latency_thresholds_and_windows_reach_the_alarms" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    target_response_time_p99_threshold_seconds = 0.5
    response_time_evaluation_minutes           = 30
    db_read_latency_threshold_seconds          = 0.005
    db_write_latency_threshold_seconds         = 0.1
    db_evaluation_minutes                      = 10
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["target_response_time"].threshold == 0.5
      && aws_cloudwatch_metric_alarm.this["target_response_time"].evaluation_periods == 6
      && aws_cloudwatch_metric_alarm.this["db_read_latency"].threshold == 0.005
      && aws_cloudwatch_metric_alarm.this["db_write_latency"].threshold == 0.1
      && aws_cloudwatch_metric_alarm.this["db_write_latency"].evaluation_periods == 2
    )
    error_message = "The latency thresholds and windows must reach the alarms unchanged (seconds)."
  }
}

run "no_certificate_alarm_without_a_certificate" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  assert {
    condition     = !contains(keys(aws_cloudwatch_metric_alarm.this), "certificate_expiry") && !contains(keys(output.alarm_names), "certificate_expiry")
    error_message = "Without certificate_arn there is no certificate to watch."
  }
}

run "certificate_alarm_watches_days_to_expiry" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["certificate_expiry"].namespace == "AWS/CertificateManager"
      && aws_cloudwatch_metric_alarm.this["certificate_expiry"].metric_name == "DaysToExpiry"
      && aws_cloudwatch_metric_alarm.this["certificate_expiry"].dimensions == tomap({ CertificateArn = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555" })
    )
    error_message = "The certificate alarm must watch DaysToExpiry of the given certificate."
  }

  assert {
    condition = (aws_cloudwatch_metric_alarm.this["certificate_expiry"].statistic == "Minimum"
      && aws_cloudwatch_metric_alarm.this["certificate_expiry"].period == 86400
      && aws_cloudwatch_metric_alarm.this["certificate_expiry"].evaluation_periods == 1
      && aws_cloudwatch_metric_alarm.this["certificate_expiry"].comparison_operator == "LessThanThreshold"
      && aws_cloudwatch_metric_alarm.this["certificate_expiry"].threshold == 30
      && aws_cloudwatch_metric_alarm.this["certificate_expiry"].treat_missing_data == "breaching"
    )
    error_message = "The certificate alarm must fire when the daily minimum of DaysToExpiry is below 30, or when ACM publishes none."
  }

  assert {
    condition     = output.alarm_names["certificate_expiry"] == "test-certificate-expiry" && length(output.names) == 13 && aws_cloudwatch_metric_alarm.this["certificate_expiry"].alarm_actions == toset([aws_sns_topic.this.arn])
    error_message = "The certificate alarm must be named <name>-certificate-expiry, listed in names and notify the topic."
  }
}

run "certificate_alarm_threshold_and_explicit_switch" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    certificate_arn                   = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
    certificate_expiry_threshold_days = 45
    certificate_expiry_alarm          = true
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.this["certificate_expiry"].threshold == 45
    error_message = "certificate_expiry_threshold_days must reach the alarm."
  }
}

run "certificate_alarm_can_be_switched_off" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    certificate_arn          = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
    certificate_expiry_alarm = false
  }

  assert {
    condition     = !contains(keys(aws_cloudwatch_metric_alarm.this), "certificate_expiry")
    error_message = "certificate_expiry_alarm = false must create no certificate alarm."
  }
}

run "rejects_a_certificate_alarm_without_a_certificate" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    certificate_expiry_alarm = true
  }

  expect_failures = [var.certificate_expiry_alarm]
}

run "rejects_a_certificate_that_is_not_from_acm" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    certificate_arn = "arn:aws:iam::123456789012:server-certificate/test"
  }

  expect_failures = [var.certificate_arn]
}

run "rejects_a_latency_threshold_in_milliseconds" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    db_read_latency_threshold_seconds = 20
  }

  expect_failures = [var.db_read_latency_threshold_seconds]
}

run "rejects_a_response_time_window_that_is_not_whole_periods" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    response_time_evaluation_minutes = 7
  }

  expect_failures = [var.response_time_evaluation_minutes]
}

run "rejects_a_certificate_threshold_of_zero_days" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    certificate_expiry_threshold_days = 0
  }

  expect_failures = [var.certificate_expiry_threshold_days]
}

run "topic_is_encrypted_and_only_this_accounts_alarms_publish" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  assert {
    condition     = aws_sns_topic.this.name == "test-alarms" && aws_sns_topic.this.kms_master_key_id == var.kms_key_arn
    error_message = "The topic <name>-alarms must be encrypted with the stack's key."
  }

  assert {
    condition     = aws_sns_topic_policy.this.arn == aws_sns_topic.this.arn
    error_message = "The policy must belong to the alarm topic."
  }

  assert {
    condition = anytrue([
      for statement in jsondecode(aws_sns_topic_policy.this.policy).Statement :
      statement.Effect == "Allow"
      && statement.Principal == { Service = "cloudwatch.amazonaws.com" }
      && statement.Action == "sns:Publish"
      && statement.Resource == aws_sns_topic.this.arn
      && try(statement.Condition.StringEquals, null) == { "aws:SourceAccount" = "123456789012" }
      && try(statement.Condition.ArnLike, null) == { "aws:SourceArn" = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:*" }
    ])
    error_message = "CloudWatch may publish only for this account's alarms (aws:SourceAccount and aws:SourceArn)."
  }

  assert {
    condition = alltrue([
      for statement in jsondecode(aws_sns_topic_policy.this.policy).Statement :
      statement.Principal != "*" && try(statement.Principal.AWS, "arn:aws:iam::123456789012:root") == "arn:aws:iam::123456789012:root"
    ])
    error_message = "No one outside this account may use the topic."
  }
}

run "no_email_subscription_by_default" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  assert {
    condition     = length(aws_sns_topic_subscription.email) == 0
    error_message = "Without alarm_emails there must be no subscription."
  }
}

run "one_email_subscription_per_address" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    alarm_emails = ["ops@example.com", "on-call+mlflow@example.org"]
  }

  assert {
    condition     = toset(keys(aws_sns_topic_subscription.email)) == toset(["on-call+mlflow@example.org", "ops@example.com"])
    error_message = "Each address must get its own subscription."
  }

  assert {
    condition     = alltrue([for address, subscription in aws_sns_topic_subscription.email : subscription.protocol == "email" && subscription.endpoint == address && subscription.topic_arn == aws_sns_topic.this.arn])
    error_message = "Each subscription must send email to its address from the alarm topic."
  }
}

run "rejects_an_invalid_email_address" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    alarm_emails = ["ops@example.com", "not-an-email"]
  }

  expect_failures = [var.alarm_emails]
}

run "rejects_the_same_email_address_twice" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    alarm_emails = ["ops@example.com", "OPS@example.com"]
  }

  expect_failures = [var.alarm_emails]
}

run "rejects_a_full_load_balancer_arn" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    load_balancer_arn_suffix = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/test/0123456789abcdef"
  }

  expect_failures = [var.load_balancer_arn_suffix]
}

run "rejects_a_network_load_balancer" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    load_balancer_arn_suffix = "net/test/0123456789abcdef"
  }

  expect_failures = [var.load_balancer_arn_suffix]
}

run "rejects_a_load_balancer_suffix_as_target_group" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    target_group_arn_suffix = "app/test/0123456789abcdef"
  }

  expect_failures = [var.target_group_arn_suffix]
}

run "rejects_no_server_in_service" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    min_in_service = 0
  }

  expect_failures = [var.min_in_service]
}

run "rejects_a_fractional_server_count" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    min_in_service = 1.5
  }

  expect_failures = [var.min_in_service]
}

run "rejects_a_database_window_that_is_not_whole_periods" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    db_evaluation_minutes = 12
  }

  expect_failures = [var.db_evaluation_minutes]
}

run "rejects_an_invalid_db_instance_identifier" {
  command = plan

  module {
    source = "./modules/alarms"
  }

  variables {
    db_instance_identifier = "Test_DB"
  }

  expect_failures = [var.db_instance_identifier]
}
