variable "name" {
  description = "Name prefix of every resource (and the Name tag)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name)) && !strcontains(var.name, "--")
    error_message = "name must be 3-24 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC this module creates (a /16 to /20); ignored when vpc_id is set."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && can(regex("/(1[6-9]|20)$", var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR block between /16 and /20, e.g. 10.42.0.0/16."
  }
}

variable "availability_zones" {
  description = "The two availability zones of the created VPC, e.g. [\"us-east-1a\", \"us-east-1b\"]; empty: the region's first two standard zones."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || (length(var.availability_zones) == 2 && length(distinct(var.availability_zones)) == 2)
    error_message = "availability_zones must be empty or name two different zones."
  }
}

variable "vpc_id" {
  description = "An existing VPC to use instead of creating one (then set public_subnet_ids and private_subnet_ids too)."
  type        = string
  default     = null

  validation {
    condition     = var.vpc_id == null || can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "public_subnet_ids" {
  description = "With vpc_id: subnets (two or more, in different availability zones) routed to an internet gateway, for the load balancer."
  type        = list(string)
  default     = []

  validation {
    condition     = var.vpc_id == null ? length(var.public_subnet_ids) == 0 : length(var.public_subnet_ids) >= 2
    error_message = "Set public_subnet_ids (two or more subnets in different availability zones) exactly when vpc_id is set."
  }

  validation {
    condition     = alltrue([for id in var.public_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", id))])
    error_message = "Every public_subnet_ids entry must look like subnet-0123456789abcdef0."
  }
}

variable "private_subnet_ids" {
  description = "With vpc_id: subnets (two or more, in different availability zones) without a route from the internet, for the servers and the database; they must reach ECR, Secrets Manager, SSM, CloudWatch Logs and S3 (a NAT gateway or VPC endpoints of your own)."
  type        = list(string)
  default     = []

  validation {
    condition     = var.vpc_id == null ? length(var.private_subnet_ids) == 0 : length(var.private_subnet_ids) >= 2
    error_message = "Set private_subnet_ids (two or more subnets in different availability zones) exactly when vpc_id is set."
  }

  validation {
    condition     = alltrue([for id in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", id))])
    error_message = "Every private_subnet_ids entry must look like subnet-0123456789abcdef0."
  }
}

variable "egress" {
  description = "How the servers in the created VPC's private subnets reach AWS's APIs (ECR, Secrets Manager, SSM, CloudWatch Logs, KMS) and Amazon Linux's package repositories: \"nat\", one NAT gateway in the first public subnet (about 33 USD a month plus 0.045 USD per GB in us-east-1); or \"endpoints\", interface endpoints for interface_endpoints in both zones and no route to the internet at all (about 14.60 USD a month each, plus 0.01 USD per GB). S3 is reached through a gateway endpoint (free) either way. Ignored with vpc_id."
  type        = string
  default     = "nat"
  nullable    = false

  validation {
    condition     = contains(["nat", "endpoints"], var.egress)
    error_message = "egress must be \"nat\" or \"endpoints\"."
  }
}

variable "interface_endpoints" {
  description = "With egress = \"endpoints\": the AWS services the servers reach through interface endpoints (the last part of com.amazonaws.REGION.SERVICE). The defaults are what the boot script and the server call: the image registry (ecr.api, ecr.dkr), Secrets Manager, Session Manager (ssm, ssmmessages, ec2messages), CloudWatch Logs and KMS."
  type        = list(string)
  default     = ["ecr.api", "ecr.dkr", "secretsmanager", "ssm", "ssmmessages", "ec2messages", "logs", "kms"]
  nullable    = false

  validation {
    condition     = alltrue([for service in var.interface_endpoints : can(regex("^[a-z0-9][a-z0-9.-]*[a-z0-9]$", service))]) && length(distinct(var.interface_endpoints)) == length(var.interface_endpoints)
    error_message = "interface_endpoints must be distinct service names such as \"secretsmanager\" or \"ecr.api\"."
  }
}

variable "enable_flow_logs" {
  description = "Record the created VPC's flow logs in CloudWatch Logs."
  type        = bool
  default     = true
}

variable "flow_logs_retention_days" {
  description = "Days CloudWatch Logs keeps the flow logs (a value CloudWatch accepts, e.g. 365)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_logs_retention_days)
    error_message = "flow_logs_retention_days must be a retention CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the flow log group (its policy must admit CloudWatch Logs)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
