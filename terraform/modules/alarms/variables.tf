variable "name" {
  description = "Name prefix of the topic (<name>-alarms) and of every alarm."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name)) && !strcontains(var.name, "--")
    error_message = "name must be 3-24 lowercase letters, digits or single hyphens, starting with a letter."
  }
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the topic; its key policy must let cloudwatch.amazonaws.com use it (kms:Decrypt, kms:GenerateDataKey*)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "alarm_emails" {
  description = "Email addresses subscribed to the topic (each must confirm the subscription from the mail AWS sends). Empty: subscribe something else to sns_topic_arn."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for email in var.alarm_emails : can(regex("^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z]{2,}$", email))])
    error_message = "Every alarm_emails entry must be an email address such as ops@example.com."
  }

  validation {
    condition     = length(distinct([for email in var.alarm_emails : lower(email)])) == length(var.alarm_emails)
    error_message = "alarm_emails must not name the same address twice."
  }
}

################################################################################
# What is watched: the servers' Auto Scaling group, the load balancer, the database
################################################################################

variable "autoscaling_group_name" {
  description = "Name of the Auto Scaling group of MLflow servers; it must publish group metrics (enabled_metrics with GroupInServiceInstances)."
  type        = string

  validation {
    condition     = length(trimspace(var.autoscaling_group_name)) > 0 && length(var.autoscaling_group_name) <= 255
    error_message = "autoscaling_group_name must be the name of an Auto Scaling group (1-255 characters)."
  }
}

variable "min_in_service" {
  description = "Alarm when fewer servers than this are in service (usually the group's min_size)."
  type        = number

  validation {
    condition     = var.min_in_service >= 1 && floor(var.min_in_service) == var.min_in_service
    error_message = "min_in_service must be a whole number, 1 or more."
  }
}

variable "load_balancer_arn_suffix" {
  description = "ARN suffix of the Application Load Balancer (aws_lb.arn_suffix), app/<name>/<id>: its LoadBalancer dimension."
  type        = string

  validation {
    condition     = can(regex("^app/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}$", var.load_balancer_arn_suffix))
    error_message = "load_balancer_arn_suffix must be an Application Load Balancer's ARN suffix, app/<name>/<16 hex digits> (aws_lb.arn_suffix)."
  }
}

variable "target_group_arn_suffix" {
  description = "ARN suffix of the servers' target group (aws_lb_target_group.arn_suffix), targetgroup/<name>/<id>: its TargetGroup dimension."
  type        = string

  validation {
    condition     = can(regex("^targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}$", var.target_group_arn_suffix))
    error_message = "target_group_arn_suffix must be a target group's ARN suffix, targetgroup/<name>/<16 hex digits> (aws_lb_target_group.arn_suffix)."
  }
}

variable "db_instance_identifier" {
  description = "Identifier of the RDS instance (its DBInstanceIdentifier dimension)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,62}$", var.db_instance_identifier)) && !strcontains(var.db_instance_identifier, "--") && !endswith(var.db_instance_identifier, "-")
    error_message = "db_instance_identifier must be an RDS instance identifier: 1-63 lowercase letters, digits or single hyphens, starting with a letter."
  }
}

variable "certificate_arn" {
  description = "ARN of the load balancer's ACM certificate (in this region): with it, an alarm on its DaysToExpiry; null (no TLS) creates none. For a certificate created in the same apply (ARN unknown at plan time) also set certificate_expiry_alarm = true."
  type        = string
  default     = null

  validation {
    condition     = var.certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]+$", var.certificate_arn))
    error_message = "certificate_arn must be null or an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID)."
  }
}

variable "certificate_expiry_alarm" {
  description = "Whether to create the certificate expiry alarm. null: when certificate_arn is set. Set it (true or false) when certificate_arn is only known after apply, e.g. the ARN of a certificate created in the same configuration: an alarm's existence must be known at plan time."
  type        = bool
  default     = null

  validation {
    condition     = var.certificate_expiry_alarm != true || var.certificate_arn != null
    error_message = "certificate_expiry_alarm = true needs certificate_arn."
  }
}

################################################################################
# Thresholds and evaluation windows
################################################################################

variable "in_service_evaluation_minutes" {
  description = "Minutes the group must stay below min_in_service before the alarm fires (a replaced server takes a few minutes to boot)."
  type        = number
  default     = 10

  validation {
    condition     = var.in_service_evaluation_minutes >= 1 && var.in_service_evaluation_minutes <= 1440 && floor(var.in_service_evaluation_minutes) == var.in_service_evaluation_minutes
    error_message = "in_service_evaluation_minutes must be a whole number from 1 to 1440."
  }
}

variable "status_check_evaluation_minutes" {
  description = "Consecutive minutes an instance status check must fail before the alarm fires."
  type        = number
  default     = 2

  validation {
    condition     = var.status_check_evaluation_minutes >= 1 && var.status_check_evaluation_minutes <= 1440 && floor(var.status_check_evaluation_minutes) == var.status_check_evaluation_minutes
    error_message = "status_check_evaluation_minutes must be a whole number from 1 to 1440."
  }
}

variable "unhealthy_host_evaluation_minutes" {
  description = "Consecutive minutes a target must be unhealthy before the alarm fires."
  type        = number
  default     = 5

  validation {
    condition     = var.unhealthy_host_evaluation_minutes >= 1 && var.unhealthy_host_evaluation_minutes <= 1440 && floor(var.unhealthy_host_evaluation_minutes) == var.unhealthy_host_evaluation_minutes
    error_message = "unhealthy_host_evaluation_minutes must be a whole number from 1 to 1440."
  }
}

variable "http_5xx_period_seconds" {
  description = "Window in seconds over which 5XX responses are counted (the load balancer's and the servers')."
  type        = number
  default     = 300

  validation {
    condition     = contains([60, 300, 900, 3600], var.http_5xx_period_seconds)
    error_message = "http_5xx_period_seconds must be one of 60, 300, 900, 3600."
  }
}

variable "elb_5xx_threshold" {
  description = "Alarm when the load balancer itself answers more 5XX (502/503/504: no healthy or reachable server) than this in one http_5xx_period_seconds."
  type        = number
  default     = 10

  validation {
    condition     = var.elb_5xx_threshold >= 0 && floor(var.elb_5xx_threshold) == var.elb_5xx_threshold
    error_message = "elb_5xx_threshold must be a whole number, 0 or more."
  }
}

variable "target_5xx_threshold" {
  description = "Alarm when the MLflow servers answer more 5XX than this in one http_5xx_period_seconds."
  type        = number
  default     = 10

  validation {
    condition     = var.target_5xx_threshold >= 0 && floor(var.target_5xx_threshold) == var.target_5xx_threshold
    error_message = "target_5xx_threshold must be a whole number, 0 or more."
  }
}

variable "db_free_storage_threshold_gib" {
  description = "Alarm when the database has less free storage than this many GiB."
  type        = number
  default     = 2

  validation {
    condition     = var.db_free_storage_threshold_gib > 0
    error_message = "db_free_storage_threshold_gib must be more than 0."
  }
}

variable "db_freeable_memory_threshold_mib" {
  description = "Alarm when the database has less freeable memory than this many MiB for db_evaluation_minutes."
  type        = number
  default     = 64

  validation {
    condition     = var.db_freeable_memory_threshold_mib > 0
    error_message = "db_freeable_memory_threshold_mib must be more than 0."
  }
}

variable "db_connections_threshold" {
  description = "Alarm when the database has more connections than this for db_evaluation_minutes (db.t4g.micro allows about 80-110: max_connections follows the instance's memory)."
  type        = number
  default     = 80

  validation {
    condition     = var.db_connections_threshold >= 1 && floor(var.db_connections_threshold) == var.db_connections_threshold
    error_message = "db_connections_threshold must be a whole number, 1 or more."
  }
}

variable "db_cpu_threshold_percent" {
  description = "Alarm when the database's average CPU utilization stays above this percentage for db_evaluation_minutes."
  type        = number
  default     = 90

  validation {
    condition     = var.db_cpu_threshold_percent > 0 && var.db_cpu_threshold_percent < 100
    error_message = "db_cpu_threshold_percent must be between 0 and 100 (exclusive)."
  }
}

variable "db_evaluation_minutes" {
  description = "Minutes (a multiple of 5) the database's CPU, freeable memory and connections must stay past their thresholds before their alarms fire."
  type        = number
  default     = 15

  validation {
    condition     = var.db_evaluation_minutes >= 5 && var.db_evaluation_minutes <= 1440 && var.db_evaluation_minutes % 5 == 0
    error_message = "db_evaluation_minutes must be a multiple of 5 from 5 to 1440."
  }
}

variable "target_response_time_p99_threshold_seconds" {
  description = "Alarm when the 99th percentile of the servers' response time (TargetResponseTime, seconds until the first response header) stays above this many seconds for response_time_evaluation_minutes."
  type        = number
  default     = 2

  validation {
    condition     = var.target_response_time_p99_threshold_seconds > 0 && var.target_response_time_p99_threshold_seconds <= 300
    error_message = "target_response_time_p99_threshold_seconds must be more than 0 and at most 300 (the load balancer's idle timeout)."
  }
}

variable "response_time_evaluation_minutes" {
  description = "Minutes (a multiple of 5: periods of 5 min) the response time must stay above its threshold before the alarm fires."
  type        = number
  default     = 15

  validation {
    condition     = var.response_time_evaluation_minutes >= 5 && var.response_time_evaluation_minutes <= 1440 && var.response_time_evaluation_minutes % 5 == 0
    error_message = "response_time_evaluation_minutes must be a multiple of 5 from 5 to 1440."
  }
}

variable "db_read_latency_threshold_seconds" {
  description = "Alarm when the database's average time per disk read (ReadLatency, in seconds: 0.02 is 20 ms) stays above this for db_evaluation_minutes."
  type        = number
  default     = 0.02

  validation {
    condition     = var.db_read_latency_threshold_seconds > 0 && var.db_read_latency_threshold_seconds <= 10
    error_message = "db_read_latency_threshold_seconds must be more than 0 and at most 10 (seconds, not milliseconds: 0.02 is 20 ms)."
  }
}

variable "db_write_latency_threshold_seconds" {
  description = "Alarm when the database's average time per disk write (WriteLatency, in seconds: 0.02 is 20 ms) stays above this for db_evaluation_minutes."
  type        = number
  default     = 0.02

  validation {
    condition     = var.db_write_latency_threshold_seconds > 0 && var.db_write_latency_threshold_seconds <= 10
    error_message = "db_write_latency_threshold_seconds must be more than 0 and at most 10 (seconds, not milliseconds: 0.02 is 20 ms)."
  }
}

variable "certificate_expiry_threshold_days" {
  description = "Alarm when the certificate (certificate_arn) expires in fewer than this many days. ACM renews its own certificates from 60 days before expiry: an alarm at 30 means a renewal is stuck."
  type        = number
  default     = 30

  validation {
    condition     = var.certificate_expiry_threshold_days >= 1 && var.certificate_expiry_threshold_days <= 365 && floor(var.certificate_expiry_threshold_days) == var.certificate_expiry_threshold_days
    error_message = "certificate_expiry_threshold_days must be a whole number from 1 to 365."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
