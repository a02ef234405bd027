output "sns_topic_arn" {
  description = "ARN of the alarm topic (subscribe chat, paging or more addresses to it)."
  value       = aws_sns_topic.this.arn
}

output "alarm_arns" {
  description = "ARN of each alarm, by short key (asg_in_service, asg_status_check, alb_5xx, target_5xx, unhealthy_hosts, target_response_time, db_free_storage, db_freeable_memory, db_connections, db_cpu, db_read_latency, db_write_latency, and certificate_expiry with certificate_arn)."
  value       = { for key, alarm in aws_cloudwatch_metric_alarm.this : key => alarm.arn }
}

output "alarm_names" {
  description = "Name of each alarm, by short key."
  value       = { for key, alarm in aws_cloudwatch_metric_alarm.this : key => alarm.alarm_name }
}

output "names" {
  description = "Names of all the alarms, sorted: for `aws cloudwatch describe-alarms --alarm-names`, a dashboard or a composite alarm."
  value       = sort([for alarm in aws_cloudwatch_metric_alarm.this : alarm.alarm_name])
}

output "alarms" {
  description = "What each alarm watches and whom it tells, by short key: metric_name, namespace, dimensions, statistic (or extended_statistic), threshold, alarm_actions, ok_actions."
  value = {
    for key, alarm in aws_cloudwatch_metric_alarm.this : key => {
      metric_name        = alarm.metric_name
      namespace          = alarm.namespace
      dimensions         = alarm.dimensions
      statistic          = alarm.statistic
      extended_statistic = alarm.extended_statistic
      threshold          = alarm.threshold
      alarm_actions      = alarm.alarm_actions
      ok_actions         = alarm.ok_actions
    }
  }
}
