variable "name" {
  description = "Name prefix of every resource."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name)) && !strcontains(var.name, "--")
    error_message = "name must be 3-24 lowercase letters, digits or single hyphens, starting with a letter."
  }
}

################################################################################
# Network and access
################################################################################

variable "vpc_id" {
  description = "VPC of the server."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets of the servers, in two or more availability zones: public ones (routed to an internet gateway) unless the VPC has another way out."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 1
    error_message = "subnet_ids must name at least one subnet (two or more in different availability zones keep the stack up when a zone fails)."
  }
}

variable "load_balancer_subnet_ids" {
  description = "Public subnets (two or more, in different availability zones) of the internet-facing load balancer."
  type        = list(string)

  validation {
    condition     = length(var.load_balancer_subnet_ids) >= 2
    error_message = "The load balancer needs two or more load_balancer_subnet_ids in different availability zones."
  }
}

variable "allowed_cidrs" {
  description = "Networks that may reach MLflow (port 5000, or 443 on the load balancer with certificate_arn), e.g. [\"203.0.113.0/24\"]. No default: choose them."
  type        = list(string)

  validation {
    condition     = length(var.allowed_cidrs) > 0
    error_message = "allowed_cidrs must name at least one network, e.g. [\"203.0.113.0/24\"] (your office or VPN)."
  }

  validation {
    condition     = alltrue([for cidr in var.allowed_cidrs : can(cidrhost(cidr, 0)) && try(cidrsubnet(cidr, 0, 0) == cidr, false)])
    error_message = "Every allowed_cidrs entry must be a CIDR block in canonical form, such as 203.0.113.0/24 or 2001:db8::/32 (host bits zero)."
  }

  validation {
    condition     = var.allow_public_ingress || !anytrue([for cidr in var.allowed_cidrs : endswith(cidr, "/0")])
    error_message = "allowed_cidrs contains the whole internet (a /0 block). Name your networks instead, or set allow_public_ingress = true if MLflow really must be open to everyone."
  }
}

variable "allow_public_ingress" {
  description = "Permit a /0 block (the whole internet) in allowed_cidrs. MLflow still requires a login, but every password guess then reaches it."
  type        = bool
  default     = false
}

variable "certificate_arn" {
  description = "ACM certificate (same region) for HTTPS on the load balancer; with neither this nor route53_zone_id, the plan fails unless allow_plain_http = true."
  type        = string
  default     = null

  validation {
    condition     = var.certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID)."
  }

  validation {
    condition     = var.certificate_arn == null || var.route53_zone_id == null
    error_message = "Set certificate_arn or route53_zone_id, not both: with route53_zone_id the module requests and validates the certificate itself."
  }
}

variable "allow_plain_http" {
  description = "Serve plain HTTP on port 80 when neither route53_zone_id nor certificate_arn is set. Basic-auth passwords then cross the network in clear text: only for a load balancer reached through a VPN or a private network (allowed_cidrs)."
  type        = bool
  default     = false
  nullable    = false

  validation {
    condition     = var.allow_plain_http || var.route53_zone_id != null || var.certificate_arn != null
    error_message = "No TLS: set route53_zone_id (with domain_name) for a certificate Terraform requests and validates, or certificate_arn for one of your own. Without TLS, basic-auth passwords cross the network in clear text; to accept that (a load balancer reached only through a VPN), set allow_plain_http = true."
  }
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone of domain_name: TLS in one variable. The module requests an ACM certificate for domain_name, validates it through DNS in this zone, points domain_name at the load balancer and redirects HTTP to HTTPS."
  type        = string
  default     = null

  validation {
    condition     = var.route53_zone_id == null || can(regex("^[A-Z0-9]{1,32}$", var.route53_zone_id))
    error_message = "route53_zone_id must be a hosted zone ID (capital letters and digits) such as Z0123456789ABCDEFGHIJ, without the /hostedzone/ prefix."
  }

  validation {
    condition     = var.route53_zone_id == null || var.domain_name != null
    error_message = "route53_zone_id needs domain_name: the name (in that zone) that the certificate and the alias record are for."
  }
}

variable "domain_name" {
  description = "DNS name clients use for the server (added to MLFLOW_STACK_ALLOWED_HOSTS and used in tracking_uri); you create the DNS record."
  type        = string
  default     = null

  validation {
    condition     = var.domain_name == null || can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain_name))
    error_message = "domain_name must be a lowercase DNS name such as mlflow.example.com (no scheme, port or path)."
  }
}

variable "associate_public_ip_address" {
  description = "Give each server a public IPv4 address. Off by default: the servers belong in private subnets (subnet_ids) that reach ECR, Secrets Manager, SSM and CloudWatch Logs through a NAT gateway or VPC endpoints; only the load balancer is public."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Protect the load balancer (the stable address) from deletion."
  type        = bool
  default     = true
}

################################################################################
# Servers
################################################################################

variable "min_size" {
  description = "Fewest servers the Auto Scaling group keeps running (two or more survive the loss of one server or zone)."
  type        = number
  default     = 2

  validation {
    condition     = var.min_size >= 1 && floor(var.min_size) == var.min_size
    error_message = "min_size must be a whole number, 1 or more."
  }
}

variable "max_size" {
  description = "Most servers the Auto Scaling group may run; an instance refresh briefly adds new servers before old ones leave, up to twice desired_capacity within this limit."
  type        = number
  default     = 4

  validation {
    condition     = var.max_size >= 1 && var.max_size <= 20 && floor(var.max_size) == var.max_size
    error_message = "max_size must be a whole number between 1 and 20."
  }
}

variable "desired_capacity" {
  description = "Servers to run (between min_size and max_size); every server is stateless: they share the database and the bucket."
  type        = number
  default     = 2

  validation {
    condition     = var.desired_capacity >= 1 && floor(var.desired_capacity) == var.desired_capacity
    error_message = "desired_capacity must be a whole number, 1 or more."
  }
}

variable "health_check_grace_period" {
  description = "Seconds a new server has to install Docker, pull the image and start (including a schema migration) before failed health checks count against it."
  type        = number
  default     = 600

  validation {
    condition     = var.health_check_grace_period >= 60 && var.health_check_grace_period <= 3600
    error_message = "health_check_grace_period must be between 60 and 3600 seconds."
  }
}

variable "database_snapshot_id" {
  description = "The database snapshot taken before this image first starts (it may migrate the schema); named in the boot script so new servers start only after it exists. null: none."
  type        = string
  default     = null
}


variable "instance_type" {
  description = "EC2 instance type; its architecture must match architecture (Graviton types such as t4g.small are arm64)."
  type        = string
  default     = "t3.small"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be an EC2 instance type such as t3.small."
  }

  validation {
    condition     = can(regex("^[a-z]+[0-9]+g[a-z]*\\.", var.instance_type)) == (var.architecture == "arm64")
    error_message = "instance_type and architecture disagree: Graviton types (t4g, m7g, ...) need architecture = \"arm64\", the others \"x86_64\"."
  }
}

variable "architecture" {
  description = "CPU architecture of the instance, the Amazon Linux image and the server image: x86_64 or arm64."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "ami_id" {
  description = "AMI of the servers (an Amazon Linux 2023 derivative); null: the latest Amazon Linux 2023 for architecture, so a newer release rolls the servers (new ones first) at the next apply."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "root_volume_size" {
  description = "Size of the encrypted root volume in GiB (the OS, Docker and the image)."
  type        = number
  default     = 30

  validation {
    condition     = var.root_volume_size >= 20 && var.root_volume_size <= 1024
    error_message = "root_volume_size must be between 20 and 1024 GiB."
  }
}

variable "detailed_monitoring" {
  description = "One-minute CloudWatch metrics for the instance (a small extra cost)."
  type        = bool
  default     = true
}

variable "image" {
  description = "The mlflow-server image to run (registry/repository:tag). null: create a private ECR repository and run its image_tag."
  type        = string
  default     = null

  validation {
    condition     = var.image == null || can(regex("^[a-z0-9][a-z0-9._/:@-]*[a-z0-9]$", var.image))
    error_message = "image must be an image reference such as 123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow/mlflow-server:0.1.0."
  }
}

variable "image_tag" {
  description = "Tag of the image in the created ECR repository (tags are immutable: push a new tag and change this to upgrade)."
  type        = string
  default     = "0.1.0"

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a Docker tag: letters, digits, _ . and -, at most 128 characters."
  }
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete the ECR repository while it still holds images."
  type        = bool
  default     = false
}

################################################################################
# What the server connects to
################################################################################

variable "bucket_name" {
  description = "The artifact bucket (MLFLOW_STACK_S3_BUCKET)."
  type        = string
}

variable "bucket_arn" {
  description = "ARN of the artifact bucket: the instance role may use this bucket's objects and no other."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_arn))
    error_message = "bucket_arn must be an S3 bucket ARN (arn:aws:s3:::NAME)."
  }
}

variable "database_address" {
  description = "Host name of the database (POSTGRES_HOST)."
  type        = string
}

variable "database_port" {
  description = "Port of the database (POSTGRES_PORT)."
  type        = number
  default     = 5432
}

variable "database_name" {
  description = "Tracking database (POSTGRES_DB)."
  type        = string
  default     = "mlflow"
}

variable "database_username" {
  description = "Database user (POSTGRES_USER)."
  type        = string
  default     = "mlflow"
}

variable "database_security_group_id" {
  description = "Security group of the database: the server may open connections to it on database_port."
  type        = string
}

variable "database_secret_arn" {
  description = "Secret with the database password (JSON key password), read at boot through the instance role."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:", var.database_secret_arn))
    error_message = "database_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "kms_key_arn" {
  description = "ARN of the stack's KMS key (root volume, secret, repository, logs); the role may use it through S3 and Secrets Manager only."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

################################################################################
# MLflow settings and secrets
################################################################################

variable "settings" {
  description = "Overrides of the settings that come neither from the infrastructure nor from Secrets Manager (names and defaults as in .env.example), e.g. { MLFLOW_STACK_WORKERS = \"4\" }."
  type        = map(string)
  default     = {}

  validation {
    condition     = length(setsubtract(keys(var.settings), keys(local.setting_defaults))) == 0
    error_message = "settings may only override ${join(", ", sort(keys(local.setting_defaults)))}; the others come from the infrastructure or from Secrets Manager."
  }

  validation {
    condition     = alltrue([for value in values(var.settings) : can(regex("^[A-Za-z0-9._@+,:*/=-]+( [A-Za-z0-9._@+,:*/=-]+)*$", value))])
    error_message = "settings values must be non-empty and use only letters, digits, . _ @ + , : * / = - and single spaces between words (they are written into a shell here-document)."
  }
}

variable "admin_password" {
  description = "Password of the MLflow admin account (ephemeral: it reaches the secret, never the state)."
  type        = string
  ephemeral   = true
  sensitive   = true

  validation {
    condition     = can(regex("^[A-Za-z0-9]{16,}$", var.admin_password))
    error_message = "admin_password must be at least 16 letters and digits."
  }
}

variable "flask_secret_key" {
  description = "Secret key that signs the UI's CSRF tokens (ephemeral: it reaches the secret, never the state)."
  type        = string
  ephemeral   = true
  sensitive   = true

  validation {
    condition     = can(regex("^[A-Za-z0-9]{32,}$", var.flask_secret_key))
    error_message = "flask_secret_key must be at least 32 letters and digits."
  }
}

variable "secrets_version" {
  description = "Increase to write new admin_password, flask_secret_key and oidc_client_secret values into the secret (and roll the servers): the secret is write-only, so a changed oidc_client_secret reaches it only with a new version."
  type        = number
  default     = 1

  validation {
    condition     = var.secrets_version >= 1 && floor(var.secrets_version) == var.secrets_version
    error_message = "secrets_version must be a whole number, 1 or more."
  }
}

################################################################################
# Single sign-on (MLFLOW_STACK_AUTH_MODE=oidc)
################################################################################

variable "oidc_issuer" {
  description = "Issuer URL of the team's OpenID provider, e.g. https://login.microsoftonline.com/<tenant id>/v2.0: single sign-on (MLFLOW_STACK_AUTH_MODE=oidc) with oidc_client_id and oidc_client_secret; null: MLflow's basic auth. Needs TLS (route53_zone_id or certificate_arn)."
  type        = string
  default     = null

  validation {
    condition     = var.oidc_issuer == null || can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^?#[:space:]'\"$`\\\\]*)?$", var.oidc_issuer))
    error_message = "oidc_issuer must be the provider's https:// issuer URL, without query or fragment, such as https://login.microsoftonline.com/<tenant id>/v2.0, https://<org>.okta.com/oauth2/default or https://<keycloak>/realms/<realm>."
  }

  validation {
    condition     = (var.oidc_issuer == null) == (var.oidc_client_id == null) && (var.oidc_issuer == null) == (var.oidc_client_secret == null || var.oidc_client_secret == "")
    error_message = "Single sign-on needs oidc_issuer, oidc_client_id and oidc_client_secret together: set all three (MLFLOW_STACK_AUTH_MODE=oidc) or none (basic auth)."
  }

  validation {
    condition     = var.oidc_issuer == null || var.route53_zone_id != null || var.certificate_arn != null
    error_message = "Single sign-on needs TLS, so not with allow_plain_http = true: its session cookie is Secure, and the provider sends people back to an https:// redirect URI. Set route53_zone_id (with domain_name) or certificate_arn."
  }
}

variable "oidc_client_id" {
  description = "Client id of the server's registration at the OpenID provider (MLFLOW_STACK_OIDC_CLIENT_ID); with oidc_issuer."
  type        = string
  default     = null

  validation {
    condition     = var.oidc_client_id == null || can(regex("^[^[:space:]'\"$#`\\\\]{1,256}$", var.oidc_client_id))
    error_message = "oidc_client_id must be 1-256 characters without whitespace, quotes, $, #, ` or \\."
  }
}

variable "oidc_client_secret" {
  description = "Client secret of that registration (ephemeral: it reaches the application secret as MLFLOW_STACK_OIDC_CLIENT_SECRET, never the state); with oidc_issuer. Written only when secrets_version changes. null or empty: none."
  type        = string
  default     = null
  ephemeral   = true
  sensitive   = true

  validation {
    condition     = var.oidc_client_secret == null || var.oidc_client_secret == "" || can(regex("^[^[:space:]'\"$#`\\\\]{8,}$", var.oidc_client_secret))
    error_message = "oidc_client_secret must be at least 8 characters without whitespace, quotes, $, #, ` or \\ (the server refuses others)."
  }
}

variable "oidc_admin_groups" {
  description = "Groups (names or IDs as the provider puts them in the groups claim) whose members are MLflow admins: MLFLOW_STACK_OIDC_ADMIN_GROUPS. Empty: settings may set it instead."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for group in var.oidc_admin_groups : can(regex("^[^[:space:],=:'\"$#`\\\\]{1,256}$", group))])
    error_message = "Every oidc_admin_groups entry must be a group name or ID of 1-256 characters without whitespace, commas, =, :, quotes, $, #, ` or \\ (e.g. ml-admins, or an Entra ID group's object ID)."
  }

  validation {
    condition     = length(var.oidc_admin_groups) == 0 || !contains(keys(var.settings), "MLFLOW_STACK_OIDC_ADMIN_GROUPS")
    error_message = "Name the admin groups in oidc_admin_groups or in settings.MLFLOW_STACK_OIDC_ADMIN_GROUPS, not both."
  }
}

variable "oidc_group_permissions" {
  description = "Each group's permission on every experiment and registered model: READ, EDIT, MANAGE or NO_PERMISSIONS, or EXPERIMENTS:MODELS, e.g. { \"ml-team\" = \"EDIT\", analysts = \"READ:NO_PERMISSIONS\" } (MLFLOW_STACK_OIDC_GROUP_PERMISSIONS). Someone in none of these groups and none of oidc_admin_groups is refused."
  type        = map(string)
  default     = {}
  nullable    = false

  validation {
    condition     = alltrue([for group in keys(var.oidc_group_permissions) : can(regex("^[^[:space:],=:'\"$#`\\\\]{1,256}$", group))])
    error_message = "Every oidc_group_permissions key must be a group name or ID of 1-256 characters without whitespace, commas, =, :, quotes, $, #, ` or \\."
  }

  validation {
    condition     = alltrue([for grant in values(var.oidc_group_permissions) : can(regex("^(READ|EDIT|MANAGE|NO_PERMISSIONS)(:(READ|EDIT|MANAGE|NO_PERMISSIONS))?$", grant))])
    error_message = "Every oidc_group_permissions value must be READ, EDIT, MANAGE or NO_PERMISSIONS, or EXPERIMENTS:MODELS such as READ:NO_PERMISSIONS."
  }

  validation {
    condition     = length(var.oidc_group_permissions) == 0 || !contains(keys(var.settings), "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS")
    error_message = "Give the groups' permissions in oidc_group_permissions or in settings.MLFLOW_STACK_OIDC_GROUP_PERMISSIONS, not both."
  }

  validation {
    condition = (var.oidc_issuer == null || length(var.oidc_group_permissions) > 0 || length(var.oidc_admin_groups) > 0
    || contains(keys(var.settings), "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS") || contains(keys(var.settings), "MLFLOW_STACK_OIDC_ADMIN_GROUPS"))
    error_message = "With oidc_issuer, name the groups that may sign in: oidc_group_permissions (e.g. { \"ml-team\" = \"EDIT\" }) or oidc_admin_groups. The server refuses everyone in none of them, and does not start without either."
  }
}

variable "secret_recovery_window_days" {
  description = "Days a deleted secret can be restored (0 deletes it at once)."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or between 7 and 30."
  }
}

variable "log_retention_days" {
  description = "Days CloudWatch Logs keeps the server's logs (a value CloudWatch accepts, e.g. 365)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "rollout_target_5xx_threshold" {
  description = "5XX answers of the servers per minute (for 2 minutes) that roll back an instance refresh in progress."
  type        = number
  default     = 10
  nullable    = false

  validation {
    condition     = var.rollout_target_5xx_threshold >= 0
    error_message = "rollout_target_5xx_threshold must be 0 or more."
  }
}

variable "access_logs" {
  description = "Where the load balancer writes its access logs: a bucket whose policy lets Elastic Load Balancing write (modules/access_logs) and a key prefix; null writes none."
  type = object({
    bucket = string
    prefix = optional(string, "")
  })
  default = null
}

variable "web_acl_arn" {
  description = "ARN of a regional AWS WAFv2 web ACL to associate with the load balancer; null: none."
  type        = string
  default     = null

  validation {
    condition     = var.web_acl_arn == null || can(regex("^arn:aws[a-z-]*:wafv2:[a-z0-9-]+:[0-9]{12}:regional/webacl/", var.web_acl_arn))
    error_message = "web_acl_arn must be a regional WAFv2 web ACL ARN (arn:aws:wafv2:REGION:ACCOUNT:regional/webacl/NAME/ID)."
  }
}
