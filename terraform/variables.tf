################################################################################
# The stack
################################################################################

variable "name" {
  description = "Name of the stack: prefix of every resource (3-24 lowercase letters, digits or hyphens)."
  type        = string
  default     = "mlflow"
}

variable "region" {
  description = "AWS region to deploy to."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "tags" {
  description = "Tags added to every resource (through the provider's default_tags)."
  type        = map(string)
  default     = {}
}

variable "kms_deletion_window_days" {
  description = "Days before a destroyed KMS key is really deleted (7-30); until then backups and snapshots encrypted with it can be saved."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "deletion_protection" {
  description = "Protect the database (and the load balancer) from deletion; set false, apply, then destroy to tear down."
  type        = bool
  default     = true
}

variable "skip_final_snapshot" {
  description = "Destroy the database without a final snapshot (throwaway environments only)."
  type        = bool
  default     = false
}

variable "force_destroy" {
  description = "Let destroy delete a bucket that holds artifacts and a repository that holds images (throwaway environments only)."
  type        = bool
  default     = false
}

variable "secret_recovery_window_days" {
  description = "Days deleted secrets can be restored (0 deletes them at once)."
  type        = number
  default     = 7
}

variable "log_retention_days" {
  description = "Days CloudWatch Logs keeps the server's logs and the VPC flow logs."
  type        = number
  default     = 365
}

################################################################################
# Who reaches the server, and how
################################################################################

variable "allowed_cidrs" {
  description = "Networks that may reach MLflow, e.g. [\"203.0.113.0/24\"] (your office or VPN). Required; a /0 block needs allow_public_ingress."
  type        = list(string)
}

variable "allow_public_ingress" {
  description = "Permit a /0 block (the whole internet) in allowed_cidrs."
  type        = bool
  default     = false
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone of domain_name: TLS in one variable (a DNS-validated ACM certificate, an alias record to the load balancer, HTTP redirected to HTTPS)."
  type        = string
  default     = null
}

variable "certificate_arn" {
  description = "An ACM certificate of your own (same region) for HTTPS on the load balancer, instead of route53_zone_id; with neither, the plan fails unless allow_plain_http = true."
  type        = string
  default     = null
}

variable "allow_plain_http" {
  description = "Serve plain HTTP on port 80 when neither route53_zone_id nor certificate_arn is set: basic-auth passwords cross the network in clear text, so only for a load balancer reached through a VPN (allowed_cidrs). Without TLS and without this, the plan fails."
  type        = bool
  default     = false
  nullable    = false

  validation {
    condition     = var.allow_plain_http || var.route53_zone_id != null || var.certificate_arn != null
    error_message = "No TLS: set route53_zone_id (with domain_name) for a certificate Terraform requests and validates, or certificate_arn for one of your own. Without TLS, basic-auth passwords cross the network in clear text; to accept that (a load balancer reached only through a VPN), set allow_plain_http = true."
  }
}

variable "web_acl_arn" {
  description = "ARN of an AWS WAFv2 web ACL (scope REGIONAL, same region) to associate with the load balancer, e.g. with AWS's managed rule groups; null: none (only allowed_cidrs reach it, and MLflow requires a login)."
  type        = string
  default     = null

  validation {
    condition     = var.web_acl_arn == null || can(regex("^arn:aws[a-z-]*:wafv2:[a-z0-9-]+:[0-9]{12}:regional/webacl/", var.web_acl_arn))
    error_message = "web_acl_arn must be a regional WAFv2 web ACL ARN (arn:aws:wafv2:REGION:ACCOUNT:regional/webacl/NAME/ID)."
  }
}

variable "access_logs_retention_days" {
  description = "Days the load balancer's access logs are kept in their bucket (<name>-alb-logs-<account>-<region>)."
  type        = number
  default     = 90

  validation {
    condition     = var.access_logs_retention_days >= 1 && floor(var.access_logs_retention_days) == var.access_logs_retention_days
    error_message = "access_logs_retention_days must be a whole number, 1 or more."
  }
}

variable "domain_name" {
  description = "DNS name clients use (with route53_zone_id the record is created; otherwise point it at the load_balancer_dns_name output)."
  type        = string
  default     = null
}

################################################################################
# Network
################################################################################

variable "vpc_cidr" {
  description = "CIDR block of the created VPC."
  type        = string
  default     = "10.42.0.0/16"
}

variable "availability_zones" {
  description = "Two availability zones for the created VPC; empty: the region's first two standard zones."
  type        = list(string)
  default     = []
}

variable "vpc_id" {
  description = "Use this existing VPC instead of creating one (with public_subnet_ids and private_subnet_ids)."
  type        = string
  default     = null
}

variable "public_subnet_ids" {
  description = "With vpc_id: two or more subnets routed to an internet gateway (server, load balancer)."
  type        = list(string)
  default     = []
}

variable "private_subnet_ids" {
  description = "With vpc_id: two or more private subnets (database)."
  type        = list(string)
  default     = []
}

variable "server_egress" {
  description = "How the servers, in private subnets without public addresses, reach AWS's APIs and Amazon Linux's repositories in the created VPC: \"nat\" (one NAT gateway, about 33 USD a month plus 0.045 USD per GB in us-east-1) or \"endpoints\" (interface endpoints and no route to the internet: about 117 USD a month for the eight of modules/network's interface_endpoints in two zones; the image must then be in this region's ECR). S3 goes through a free gateway endpoint either way. With vpc_id your private_subnet_ids must provide this."
  type        = string
  default     = "nat"
  nullable    = false

  validation {
    condition     = contains(["nat", "endpoints"], var.server_egress)
    error_message = "server_egress must be \"nat\" or \"endpoints\"."
  }
}

variable "enable_flow_logs" {
  description = "Record the created VPC's flow logs in CloudWatch Logs."
  type        = bool
  default     = true
}

################################################################################
# Artifacts
################################################################################

variable "bucket_name" {
  description = "Name of the artifact bucket; null: <name>-artifacts-<account>-<region>."
  type        = string
  default     = null
}

variable "noncurrent_version_expiration_days" {
  description = "Delete overwritten or deleted artifact versions after this many days (null keeps them)."
  type        = number
  default     = 90
}

################################################################################
# Database
################################################################################

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.micro"
}

variable "db_engine_version" {
  description = "PostgreSQL major (or major.minor) version. 15 matches compose and the native runtime, and the pg_dump in the image (Debian bookworm's 15) that `mlflow-stack backup` uses: it cannot dump a newer server."
  type        = string
  default     = "15"
}

variable "db_allocated_storage" {
  description = "Initial database storage in GiB."
  type        = number
  default     = 20
}

variable "db_max_allocated_storage" {
  description = "Storage autoscaling limit in GiB."
  type        = number
  default     = 100
}

variable "db_backup_retention_days" {
  description = "Days of automated backups (7-35)."
  type        = number
  default     = 7
}

variable "db_multi_az" {
  description = "Run a standby in a second availability zone (doubles the database cost)."
  type        = bool
  default     = false
}

variable "db_monitoring_interval" {
  description = "Seconds between enhanced monitoring samples (0 turns it off)."
  type        = number
  default     = 60
}

variable "db_performance_insights_enabled" {
  description = "Turn on Performance Insights (7 days free)."
  type        = bool
  default     = true
}

variable "db_apply_immediately" {
  description = "Apply database changes (e.g. a new instance class) now instead of in the next maintenance window."
  type        = bool
  default     = false
}

variable "db_ca_cert_identifier" {
  description = "Certificate authority of the database's server certificate (null: the region's default)."
  type        = string
  default     = "rds-ca-rsa2048-g1"
}

variable "db_snapshot_before_upgrade" {
  description = "Take a manual database snapshot before a new image (which may migrate the schema) starts; the previous such snapshot is deleted once the new one exists."
  type        = bool
  default     = true
}

variable "db_snapshot_identifier" {
  description = "Restore the database from this DB snapshot: takes effect only with -replace=module.database.aws_db_instance.this (see the restore drill in README.md); remove it after the restore."
  type        = string
  default     = null
}

variable "db_restore_to_point_in_time" {
  description = "Restore the database to a point in time of an instance's backups: takes effect only with -replace=module.database.aws_db_instance.this (see the restore drill in README.md); remove it after the restore."
  type = object({
    source_db_instance_identifier = optional(string)
    source_dbi_resource_id        = optional(string)
    restore_time                  = optional(string)
    use_latest_restorable_time    = optional(bool)
  })
  default = null
}

variable "db_password_version" {
  description = "Increase to generate and set a new database password; running servers pick it up without being replaced (they read the secret at each new connection)."
  type        = number
  default     = 1
}

################################################################################
# Servers
################################################################################

variable "min_size" {
  description = "Fewest MLflow servers running (behind the load balancer, all on one database and one bucket)."
  type        = number
  default     = 2
}

variable "max_size" {
  description = "Most MLflow servers; an upgrade briefly runs new servers beside the old ones, within this limit."
  type        = number
  default     = 4
}

variable "desired_capacity" {
  description = "MLflow servers to run (between min_size and max_size)."
  type        = number
  default     = 2
}

variable "health_check_grace_period" {
  description = "Seconds a new server has to boot, pull the image and migrate the schema before failed health checks replace it."
  type        = number
  default     = 600
}

variable "rollout_timeout_minutes" {
  description = "How long apply waits for an instance refresh onto a new launch template version to end (it rolls back by itself if the new servers fail their health checks or a rollout alarm fires); when the wait runs out, apply fails and the refresh goes on."
  type        = number
  default     = 45
  nullable    = false

  validation {
    condition     = var.rollout_timeout_minutes >= 5 && var.rollout_timeout_minutes <= 240
    error_message = "rollout_timeout_minutes must be between 5 and 240."
  }
}

variable "create_autoscaling_service_linked_role" {
  description = "Create the account's AWSServiceRoleForAutoScaling (only in an account that has never used Auto Scaling; the plan says so when it is missing)."
  type        = bool
  default     = false
}

variable "instance_type" {
  description = "EC2 instance type of each server."
  type        = string
  default     = "t3.small"
}

variable "architecture" {
  description = "x86_64 or arm64 (must match instance_type and the image)."
  type        = string
  default     = "x86_64"
}

variable "ami_id" {
  description = "AMI of the servers; null: the latest Amazon Linux 2023 (a newer release rolls the servers, new ones first, at the next apply)."
  type        = string
  default     = null
}

variable "root_volume_size" {
  description = "Root volume size in GiB."
  type        = number
  default     = 30
}

variable "detailed_monitoring" {
  description = "One-minute CloudWatch metrics for the servers."
  type        = bool
  default     = true
}

variable "image" {
  description = "The mlflow-server image to run; null: create a private ECR repository and run its image_tag."
  type        = string
  default     = null
}

variable "image_tag" {
  description = "Tag of the image in the created ECR repository; a new tag snapshots the database and rolls the servers."
  type        = string
  default     = "0.1.0"
}

variable "settings" {
  description = "Overrides of MLflow settings that do not come from the infrastructure, e.g. { MLFLOW_STACK_WORKERS = \"4\" } (see .env.example)."
  type        = map(string)
  default     = {}
}

variable "secrets_version" {
  description = "Increase to generate a new admin password and Flask secret key, write oidc_client_secret, and roll the servers (the admin password is used only when the admin account is first created). Raise it with the apply that first sets oidc_client_secret or changes it: the secret is write-only, so Terraform writes it only then."
  type        = number
  default     = 1
}

################################################################################
# Single sign-on (OIDC): the team's OpenID provider instead of MLflow's passwords
################################################################################

variable "oidc_issuer" {
  description = "Issuer URL of the team's OpenID provider (https://; e.g. https://login.microsoftonline.com/<tenant id>/v2.0, https://<org>.okta.com/oauth2/default, https://<keycloak>/realms/<realm>): turns on single sign-on (MLFLOW_STACK_AUTH_MODE=oidc) with oidc_client_id and oidc_client_secret. null: MLflow's basic auth. Needs TLS. Registration: docs/sso-providers.md."
  type        = string
  default     = null

  validation {
    condition     = var.oidc_issuer == null || can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^?#[:space:]'\"$`\\\\]*)?$", var.oidc_issuer))
    error_message = "oidc_issuer must be the provider's https:// issuer URL, without query or fragment, such as https://login.microsoftonline.com/<tenant id>/v2.0, https://<org>.okta.com/oauth2/default or https://<keycloak>/realms/<realm>."
  }
}

variable "oidc_client_id" {
  description = "Client id of the server's registration at the OpenID provider (a web application with the redirect URI of the oidc_redirect_uri output); with oidc_issuer."
  type        = string
  default     = null
}

variable "oidc_client_secret" {
  description = "Client secret of that registration; with oidc_issuer. Ephemeral: it goes into the application secret (key MLFLOW_STACK_OIDC_CLIENT_SECRET) through a write-only argument, never into the plan or the state, and only in an apply that raises secrets_version. Pass it as TF_VAR_oidc_client_secret."
  type        = string
  default     = null
  ephemeral   = true
  sensitive   = true
}

variable "oidc_admin_groups" {
  description = "Groups whose members are MLflow admins (MLFLOW_STACK_OIDC_ADMIN_GROUPS), as the provider names them in the groups claim (Entra ID: group object IDs), e.g. [\"ml-admins\"]."
  type        = list(string)
  default     = []
  nullable    = false
}

variable "oidc_group_permissions" {
  description = "Each group's permission on every experiment and registered model (MLFLOW_STACK_OIDC_GROUP_PERMISSIONS): READ, EDIT, MANAGE, NO_PERMISSIONS, or EXPERIMENTS:MODELS, e.g. { \"ml-team\" = \"EDIT\", analysts = \"READ:NO_PERMISSIONS\" }. With oidc_issuer, this or oidc_admin_groups is required: someone in none of the groups is refused."
  type        = map(string)
  default     = {}
  nullable    = false
}

################################################################################
# Alarms
################################################################################

variable "alarm_emails" {
  description = "Email addresses subscribed to the alarm topic (each confirms by email); empty: subscribe your own endpoints to the alarm_topic_arn output."
  type        = list(string)
  default     = []
}
