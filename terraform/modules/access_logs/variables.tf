variable "bucket_name" {
  description = "Name of the access log bucket (globally unique), in the load balancer's Region."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)) && !strcontains(var.bucket_name, "..")
    error_message = "bucket_name must be a valid S3 bucket name: 3-63 lowercase letters, digits, dots or hyphens."
  }
}

variable "prefix" {
  description = "Key prefix of the logs (the aws_lb access_logs prefix), without leading or trailing slash; \"\" for none. The load balancer adds AWSLogs/<account id>/ after it."
  type        = string
  default     = "alb"

  validation {
    condition     = var.prefix == "" || can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$", var.prefix))
    error_message = "prefix must be \"\" or path segments of letters, digits and !_.*'()- separated by single slashes, with no leading or trailing slash."
  }

  validation {
    condition     = !strcontains(var.prefix, "AWSLogs")
    error_message = "prefix must not contain AWSLogs: the load balancer adds AWSLogs/<account id>/ itself."
  }
}

variable "retention_days" {
  description = "Delete log files this many days after they are written (an incident found later than that has no access logs)."
  type        = number
  default     = 90

  validation {
    condition     = var.retention_days >= 1 && floor(var.retention_days) == var.retention_days
    error_message = "retention_days must be a whole number, 1 or more."
  }
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete the bucket while it still holds logs (throwaway environments only)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
