data "aws_region" "current" {}

data "aws_partition" "current" {}

data "aws_vpc" "this" {
  id = var.vpc_id
}

data "aws_ssm_parameter" "ami" {
  count = var.ami_id == null ? 1 : 0

  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

locals {
  region    = data.aws_region.current.name
  partition = data.aws_partition.current.partition
  # TLS with the caller's certificate, or with one this module requests and validates in the
  # Route 53 zone.
  create_certificate = var.route53_zone_id != null
  tls                = var.certificate_arn != null || local.create_certificate
  certificate_arn    = local.create_certificate ? aws_acm_certificate_validation.this[0].certificate_arn : var.certificate_arn
  ami_id             = var.ami_id != null ? var.ami_id : data.aws_ssm_parameter.ami[0].insecure_value

  create_repository = var.image == null
  image             = local.create_repository ? "${aws_ecr_repository.this[0].repository_url}:${var.image_tag}" : var.image
  # The registry to log in to before pulling: only for an image in Amazon ECR.
  registry = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?/", local.image)) ? split("/", local.image)[0] : ""

  container_port = 5000
  ipv6_cidrs     = [for cidr in var.allowed_cidrs : cidr if strcontains(cidr, ":")]
  ipv4_cidrs     = [for cidr in var.allowed_cidrs : cidr if !strcontains(cidr, ":")]

  # Host names clients may use (MLFLOW_STACK_ALLOWED_HOSTS): the domain name and the load
  # balancer's name, both known before any server starts. Localhost and private addresses (the
  # load balancer's health checks) are always allowed.
  allowed_hosts = join(",", concat(
    var.domain_name == null ? [] : [var.domain_name],
    [aws_lb.this.dns_name],
  ))
  # The stable address: it names the load balancer, never a server, so it survives upgrades.
  public_host  = coalesce(var.domain_name, aws_lb.this.dns_name)
  tracking_uri = local.tls ? "https://${local.public_host}" : "http://${local.public_host}"

  # Settings a user may change through var.settings, with the defaults of .env.example.
  setting_defaults = {
    MLFLOW_STACK_AUTH_DB                 = "mlflow_auth"
    MLFLOW_STACK_WORKERS                 = "2"
    MLFLOW_STACK_WAIT_TIMEOUT            = "60"
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION   = "false"
    MLFLOW_STACK_GC_RETENTION_DAYS       = "30"
    MLFLOW_AUTH_ADMIN_USERNAME           = "admin"
    MLFLOW_STACK_AUTH_DEFAULT_PERMISSION = "READ"
    MLFLOW_STACK_AUTH_CACHE_TTL          = "60"
    MLFLOW_STACK_ARTIFACT_PRESIGNED_URLS = "false"
    MLFLOW_STACK_OIDC_SCOPES             = "openid profile email"
    MLFLOW_STACK_OIDC_USERNAME_CLAIM     = "preferred_username"
    MLFLOW_STACK_OIDC_GROUPS_CLAIM       = "groups"
    MLFLOW_STACK_OIDC_ADMIN_GROUPS       = ""
    MLFLOW_STACK_OIDC_GROUP_PERMISSIONS  = ""
    MLFLOW_STACK_OIDC_AUDIENCE           = ""
    MLFLOW_STACK_OIDC_SESSION_TTL        = "3600"
  }

  # Single sign-on: on with oidc_issuer (the variables' validations require the client id and
  # secret with it, and TLS). The groups' variables, when given, are the two settings.
  oidc = var.oidc_issuer != null
  group_settings = merge(
    length(var.oidc_admin_groups) == 0 ? {} : {
      MLFLOW_STACK_OIDC_ADMIN_GROUPS = join(",", var.oidc_admin_groups)
    },
    length(var.oidc_group_permissions) == 0 ? {} : {
      MLFLOW_STACK_OIDC_GROUP_PERMISSIONS = join(",", [for group, grant in var.oidc_group_permissions : "${group}=${grant}"])
    },
  )

  # The server's env file: every variable of src/mlflow_stack/settings/contract.py exactly once (a test
  # compares the names). Values written "$${NAME}" are shell variables that the boot script
  # fills in on the instance: passwords read from Secrets Manager through the instance role
  # (and DB_SECRET_ARN, the database secret the server itself reads whenever it opens a
  # connection),
  # and names read from the instance metadata. They never pass through Terraform.
  environment = merge(local.setting_defaults, var.settings, local.group_settings, {
    POSTGRES_HOST                = var.database_address
    POSTGRES_PORT                = tostring(var.database_port)
    POSTGRES_USER                = var.database_username
    POSTGRES_PASSWORD            = "" # empty: the server reads POSTGRES_PASSWORD_SECRET_ARN
    POSTGRES_PASSWORD_FILE       = ""
    POSTGRES_PASSWORD_SECRET_ARN = "$${DB_SECRET_ARN}" # the boot script's DB_SECRET_ARN; read at each new connection
    POSTGRES_DB                  = var.database_name
    POSTGRES_SSLMODE             = "require"
    MLFLOW_STACK_S3_BUCKET       = var.bucket_name
    MLFLOW_STACK_S3_ENDPOINT_URL = "" # empty: AWS S3
    MLFLOW_STACK_S3_ACCESS_KEY   = "" # empty (with the secret key): the instance role
    MLFLOW_STACK_S3_SECRET_KEY   = ""
    MLFLOW_STACK_S3_REGION       = local.region
    MLFLOW_STACK_HOST            = "0.0.0.0" # inside the container
    MLFLOW_STACK_PORT            = tostring(local.container_port)
    MLFLOW_STACK_ALLOWED_HOSTS   = local.allowed_hosts
    # Every request comes through the load balancer, from inside the VPC: its X-Forwarded-For
    # names the client, so failed logins are limited per client, not per load-balancer node.
    MLFLOW_STACK_TRUSTED_PROXIES   = data.aws_vpc.this.cidr_block
    MLFLOW_AUTH_ADMIN_PASSWORD     = "$${MLFLOW_AUTH_ADMIN_PASSWORD}"
    MLFLOW_FLASK_SERVER_SECRET_KEY = "$${MLFLOW_FLASK_SERVER_SECRET_KEY}"
    # Single sign-on, or basic auth with these empty. The provider sends people back to
    # <public URL>/auth/callback; the client secret comes from the app secret at boot.
    MLFLOW_STACK_AUTH_MODE               = local.oidc ? "oidc" : "basic"
    MLFLOW_STACK_PUBLIC_URL              = local.oidc ? local.tracking_uri : ""
    MLFLOW_STACK_OIDC_ISSUER             = local.oidc ? var.oidc_issuer : ""
    MLFLOW_STACK_OIDC_CLIENT_ID          = local.oidc ? var.oidc_client_id : ""
    MLFLOW_STACK_OIDC_CLIENT_SECRET      = local.oidc ? "$${MLFLOW_STACK_OIDC_CLIENT_SECRET}" : ""
    MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE = "" # empty: MLFLOW_STACK_OIDC_CLIENT_SECRET
  })

  user_data = templatefile("${path.module}/user_data.sh.tftpl", {
    environment     = local.environment
    region          = local.region
    image           = local.image
    registry        = local.registry
    container_port  = local.container_port
    log_group       = aws_cloudwatch_log_group.this.name
    db_secret_arn   = var.database_secret_arn
    app_secret_arn  = aws_secretsmanager_secret.app.arn
    secrets_version = var.secrets_version
    # The launch template waits for the snapshot taken before this image migrates the schema.
    database_snapshot = var.database_snapshot_id == null ? "" : var.database_snapshot_id
  })
}

################################################################################
# Image repository (private, immutable tags, scanned, KMS-encrypted)
################################################################################

resource "aws_ecr_repository" "this" {
  count = local.create_repository ? 1 : 0

  name                 = "${var.name}/mlflow-server"
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.force_destroy

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }

  tags = var.tags
}

################################################################################
# Application secret: admin password and Flask secret key (generated), the OIDC client secret
# (given); write-only
################################################################################

resource "aws_secretsmanager_secret" "app" {
  #checkov:skip=CKV2_AWS_57:The admin password is used only when the admin account is first created and the Flask key is read at start; rotate by raising secrets_version, which also replaces the instance.
  name_prefix             = "${var.name}/mlflow-"
  description             = "MLflow admin password, Flask secret key (and OIDC client secret) of ${var.name}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = var.tags
}

resource "aws_secretsmanager_secret_version" "app" {
  secret_id = aws_secretsmanager_secret.app.id
  # Keys named after the settings they fill. Write-only: never in the state, and written only
  # when secrets_version changes (Terraform cannot see a changed value).
  secret_string_wo = jsonencode(merge(
    {
      MLFLOW_AUTH_ADMIN_PASSWORD     = var.admin_password
      MLFLOW_FLASK_SERVER_SECRET_KEY = var.flask_secret_key
    },
    local.oidc ? { MLFLOW_STACK_OIDC_CLIENT_SECRET = var.oidc_client_secret } : {},
  ))
  secret_string_wo_version = var.secrets_version
}

################################################################################
# Container logs
################################################################################

resource "aws_cloudwatch_log_group" "this" {
  name              = "/mlflow-stack/${var.name}/server"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = var.tags
}

################################################################################
# Instance role: this bucket's objects, this stack's secrets, this repository, these logs
################################################################################

resource "aws_iam_role" "this" {
  name_prefix = "${var.name}-server-"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "ec2.amazonaws.com" }
    }]
  })

  tags = var.tags
}

resource "aws_iam_role_policy" "this" {
  name = "mlflow-server"
  role = aws_iam_role.this.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ListArtifactBucket"
        Effect   = "Allow"
        Action   = ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"]
        Resource = var.bucket_arn
      },
      {
        Sid    = "ReadWriteArtifacts"
        Effect = "Allow"
        Action = [
          "s3:GetObject",
          "s3:PutObject",
          "s3:DeleteObject",
          "s3:AbortMultipartUpload",
          "s3:ListMultipartUploadParts",
        ]
        Resource = "${var.bucket_arn}/*"
      },
      {
        Sid      = "ReadStackSecrets"
        Effect   = "Allow"
        Action   = "secretsmanager:GetSecretValue"
        Resource = [var.database_secret_arn, aws_secretsmanager_secret.app.arn]
      },
      {
        Sid      = "UseStackKeyThroughS3AndSecretsManager"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource = var.kms_key_arn
        Condition = {
          StringEquals = {
            "kms:ViaService" = [
              "s3.${local.region}.amazonaws.com",
              "secretsmanager.${local.region}.amazonaws.com",
            ]
          }
        }
      },
      {
        Sid      = "WriteContainerLogs"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = "${aws_cloudwatch_log_group.this.arn}:*"
      },
    ]
  })
}

resource "aws_iam_role_policy" "pull_image" {
  count = local.create_repository ? 1 : 0

  name = "pull-mlflow-server-image"
  role = aws_iam_role.this.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "LogInToRegistry"
        Effect   = "Allow"
        Action   = "ecr:GetAuthorizationToken"
        Resource = "*" # the action has no resource-level permissions
      },
      {
        Sid      = "PullServerImage"
        Effect   = "Allow"
        Action   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
        Resource = aws_ecr_repository.this[0].arn
      },
    ]
  })
}

# Session Manager (shell access without an SSH port).
resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.this.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "this" {
  name_prefix = "${var.name}-server-"
  role        = aws_iam_role.this.name

  tags = var.tags
}

################################################################################
# Security groups: the load balancer's listeners for allowed_cidrs; the servers' port for the
# load balancer only
################################################################################

locals {
  # Port 80 always (plain HTTP, or the redirect to HTTPS); 443 with TLS.
  listener_ports = local.tls ? [80, 443] : [80]
  ingress_ipv4   = { for pair in setproduct(local.listener_ports, local.ipv4_cidrs) : "${pair[0]} ${pair[1]}" => { port = pair[0], cidr = pair[1] } }
  ingress_ipv6   = { for pair in setproduct(local.listener_ports, local.ipv6_cidrs) : "${pair[0]} ${pair[1]}" => { port = pair[0], cidr = pair[1] } }
}

resource "aws_security_group" "alb" {
  name_prefix = "${var.name}-alb-"
  description = "Load balancer of ${var.name}"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-alb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "alb_ipv4" {
  for_each = local.ingress_ipv4

  security_group_id = aws_security_group.alb.id
  description       = each.value.port == 443 ? "HTTPS from an allowed network" : "HTTP from an allowed network"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr

  tags = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "alb_ipv6" {
  for_each = local.ingress_ipv6

  security_group_id = aws_security_group.alb.id
  description       = each.value.port == 443 ? "HTTPS from an allowed network" : "HTTP from an allowed network"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv6         = each.value.cidr

  tags = var.tags
}

resource "aws_vpc_security_group_egress_rule" "alb_to_server" {
  security_group_id            = aws_security_group.alb.id
  description                  = "MLflow on the servers"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.this.id

  tags = var.tags
}

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-server-"
  description = "MLflow servers of ${var.name}"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-server" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "mlflow_from_load_balancer" {
  security_group_id            = aws_security_group.this.id
  description                  = "MLflow from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.alb.id

  tags = var.tags
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.this.id
  description       = "HTTPS to AWS APIs (S3, Secrets Manager, ECR, SSM, CloudWatch) and package repositories"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"

  tags = var.tags
}

resource "aws_vpc_security_group_egress_rule" "postgres" {
  security_group_id            = aws_security_group.this.id
  description                  = "PostgreSQL"
  ip_protocol                  = "tcp"
  from_port                    = var.database_port
  to_port                      = var.database_port
  referenced_security_group_id = var.database_security_group_id

  tags = var.tags
}

################################################################################
# The load balancer: the stable address of the stack
################################################################################

resource "aws_lb" "this" {
  #checkov:skip=CKV2_AWS_76:The web ACL is the operator's own (web_acl_arn), so are its rules: the docs suggest AWS's managed rule groups, whose Known Bad Inputs set covers Log4j; the servers run no Java.
  #checkov:skip=CKV2_AWS_28:A WAF web ACL is the operator's choice (web_acl_arn, associated below): only allowed_cidrs reach the load balancer and MLflow requires a login, and a web ACL with managed rules costs about as much as the rest of a small stack.
  #checkov:skip=CKV2_AWS_20:With TLS (route53_zone_id or certificate_arn) port 80 only redirects to HTTPS (listener http_redirect); without a certificate the plan fails unless the operator sets allow_plain_http = true, and then there is no HTTPS to redirect to.
  name                       = var.name
  load_balancer_type         = "application"
  internal                   = false
  security_groups            = [aws_security_group.alb.id]
  subnets                    = var.load_balancer_subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  # Large artifact uploads and downloads stream through the servers.
  idle_timeout = 300

  # Enabling them makes ELB write a test file: the bucket policy must already allow it (the
  # root passes the access_logs module's bucket_name, an output that waits for the policy).
  access_logs {
    bucket  = var.access_logs != null ? var.access_logs.bucket : ""
    prefix  = var.access_logs != null ? var.access_logs.prefix : null
    enabled = var.access_logs != null
  }

  tags = var.tags
}

resource "aws_wafv2_web_acl_association" "this" {
  count = var.web_acl_arn != null ? 1 : 0

  resource_arn = aws_lb.this.arn
  web_acl_arn  = var.web_acl_arn
}

resource "aws_lb_target_group" "this" {
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; from there to the servers traffic stays inside the VPC, between two security groups that admit only each other.
  name        = "${var.name}-server"
  port        = local.container_port
  protocol    = "HTTP"
  target_type = "instance"
  vpc_id      = var.vpc_id
  # A server leaving (scale-in, instance refresh) finishes its requests for up to 2 minutes.
  deregistration_delay = 120

  # /health/live: the process answers. Not /health, which also follows the database: during a
  # database failover every server would turn unhealthy at once and the Auto Scaling group
  # (ELB health checks) would replace all of them, turning a one-minute failover into an
  # outage of several minutes. The database has its own alarms.
  health_check {
    path                = "/health/live"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = var.tags
}

# Plain HTTP (no certificate, and allow_plain_http = true: without it the plan fails): basic-auth
# passwords cross the network in clear text, so allowed_cidrs must be a VPN or private network.
resource "aws_lb_listener" "http" {
  #checkov:skip=CKV_AWS_2:This listener exists only with allow_plain_http = true and no certificate (the plan fails otherwise): the operator's explicit choice for a VPN-only load balancer. With TLS port 80 only redirects to HTTPS (listener http_redirect).
  #checkov:skip=CKV_AWS_103:Plain HTTP only by the operator's explicit allow_plain_http = true; with a certificate the HTTPS listener uses the TLS 1.3/1.2 policy.
  count = local.tls ? 0 : 1

  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }

  tags = var.tags
}

resource "aws_lb_listener" "http_redirect" {
  count = local.tls ? 1 : 0

  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"

    redirect {
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }
  }

  tags = var.tags
}

resource "aws_lb_listener" "https" {
  count = local.tls ? 1 : 0

  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = local.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }

  tags = var.tags
}

################################################################################
# TLS in one variable: with route53_zone_id, a DNS-validated certificate for domain_name and an
# alias record to the load balancer
################################################################################

resource "aws_acm_certificate" "this" {
  count = local.create_certificate ? 1 : 0

  domain_name       = var.domain_name
  validation_method = "DNS"

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "validation" {
  # One name, one validation record (known only after the certificate exists: hence count).
  count = local.create_certificate ? 1 : 0

  zone_id         = var.route53_zone_id
  name            = one(aws_acm_certificate.this[0].domain_validation_options).resource_record_name
  type            = one(aws_acm_certificate.this[0].domain_validation_options).resource_record_type
  records         = [one(aws_acm_certificate.this[0].domain_validation_options).resource_record_value]
  ttl             = 300
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "this" {
  count = local.create_certificate ? 1 : 0

  certificate_arn         = aws_acm_certificate.this[0].arn
  validation_record_fqdns = aws_route53_record.validation[*].fqdn
}

resource "aws_route53_record" "alias" {
  count = local.create_certificate ? 1 : 0

  zone_id = var.route53_zone_id
  name    = var.domain_name
  type    = "A"

  alias {
    name                   = aws_lb.this.dns_name
    zone_id                = aws_lb.this.zone_id
    evaluate_target_health = true
  }
}

################################################################################
# The servers: a launch template and an Auto Scaling group behind the load balancer
################################################################################

resource "aws_launch_template" "this" {
  #checkov:skip=CKV_AWS_341:Hop limit 2 lets the MLflow container (one bridge away) use the instance role for S3 and Secrets Manager; IMDSv2 tokens are required.
  name_prefix            = "${var.name}-server-"
  description            = "MLflow server of ${var.name} (image ${local.image})"
  image_id               = local.ami_id
  instance_type          = var.instance_type
  ebs_optimized          = true
  update_default_version = true
  user_data              = base64encode(local.user_data)

  iam_instance_profile {
    arn = aws_iam_instance_profile.this.arn
  }

  network_interfaces {
    associate_public_ip_address = var.associate_public_ip_address
    security_groups             = [aws_security_group.this.id]
    delete_on_termination       = true
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
    # 2 hops: the container (one bridge away) reads the instance role's credentials.
    http_put_response_hop_limit = 2
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = var.detailed_monitoring
  }

  block_device_mappings {
    device_name = "/dev/xvda" # the root device of Amazon Linux 2023

    ebs {
      volume_type           = "gp3"
      volume_size           = var.root_volume_size
      encrypted             = true
      kms_key_id            = var.kms_key_arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-server" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = "${var.name}-server" })
  }

  tags = var.tags

  # The boot script reads both secrets: they must hold a value before a server starts.
  depends_on = [aws_secretsmanager_secret_version.app]
}

resource "aws_autoscaling_group" "this" {
  name                = "${var.name}-server"
  vpc_zone_identifier = var.subnet_ids
  target_group_arns   = [aws_lb_target_group.this.arn]
  min_size            = var.min_size
  max_size            = var.max_size
  desired_capacity    = var.desired_capacity

  # A server that stops answering /health/live on the load balancer is replaced.
  health_check_type         = "ELB"
  health_check_grace_period = var.health_check_grace_period
  # The image may not be pushed yet at the first apply: do not wait for healthy servers then.
  # Later versions are rolled out, and waited for, by the rollout below.
  wait_for_capacity_timeout = "0"
  default_instance_warmup   = var.health_check_grace_period

  # Group metrics feed the GroupInServiceInstances alarm.
  enabled_metrics = [
    "GroupDesiredCapacity",
    "GroupInServiceInstances",
    "GroupMinSize",
    "GroupMaxSize",
    "GroupPendingInstances",
    "GroupTerminatingInstances",
    "GroupTotalInstances",
  ]
  metrics_granularity = "1Minute"

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  tag {
    key                 = "Name"
    value               = "${var.name}-server"
    propagate_at_launch = true
  }

  dynamic "tag" {
    for_each = var.tags

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    precondition {
      condition     = var.min_size <= var.desired_capacity && var.desired_capacity <= var.max_size
      error_message = "desired_capacity must be between min_size and max_size."
    }

    # The group is created on the template's first version; every later version reaches it
    # through an instance refresh that names it as the desired configuration (output rollout),
    # which AWS saves on the group only when the refresh succeeds. Were Terraform to update the
    # group's version itself (as the provider's instance_refresh block does before starting a
    # refresh, hashicorp/terraform-provider-aws#34189), an auto rollback would "roll back" to
    # the new version.
    ignore_changes = [launch_template]
  }
}

################################################################################
# Rollouts: an instance refresh onto each new launch template version, rolled back by AWS when
# it fails or when one of these alarms fires during it
################################################################################

locals {
  rollout_alarms = {
    # The new servers answer errors: any 5XX burst during the refresh.
    target-5xx = {
      metric_name         = "HTTPCode_Target_5XX_Count"
      statistic           = "Sum"
      period              = 60
      evaluation_periods  = 2
      comparison_operator = "GreaterThanThreshold"
      threshold           = var.rollout_target_5xx_threshold
      description         = "Servers answered more than ${var.rollout_target_5xx_threshold} 5XX a minute for 2 minutes: an instance refresh in progress rolls back."
    }
    # A new server never passes /health/live (an image that does not start, a wrong setting).
    unhealthy-hosts = {
      metric_name         = "UnHealthyHostCount"
      statistic           = "Maximum"
      period              = 60
      evaluation_periods  = 3
      comparison_operator = "GreaterThanOrEqualToThreshold"
      threshold           = 1
      description         = "A server failed its health check for 3 minutes: an instance refresh in progress rolls back."
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "rollout" {
  for_each = local.rollout_alarms

  alarm_name          = "${var.name}-rollout-${each.key}"
  alarm_description   = each.value.description
  namespace           = "AWS/ApplicationELB"
  metric_name         = each.value.metric_name
  statistic           = each.value.statistic
  period              = each.value.period
  evaluation_periods  = each.value.evaluation_periods
  comparison_operator = each.value.comparison_operator
  threshold           = each.value.threshold
  treat_missing_data  = "notBreaching"
  dimensions = {
    LoadBalancer = aws_lb.this.arn_suffix
    TargetGroup  = aws_lb_target_group.this.arn_suffix
  }
  # No actions: the instance refresh reads them (the alarms module notifies people).

  tags = var.tags
}

locals {
  # What terraform/scripts/roll-out.sh needs to roll the group onto the latest version: a
  # Rolling refresh that starts new servers beside the old ones (up to twice the capacity) and
  # takes an old one away only when a new one is healthy, rolled back automatically.
  rollout = {
    GROUP              = aws_autoscaling_group.this.name
    REGION             = local.region
    LAUNCH_TEMPLATE_ID = aws_launch_template.this.id
    VERSION            = tostring(aws_launch_template.this.latest_version)
    DESIRED_CONFIGURATION = jsonencode({
      LaunchTemplate = {
        LaunchTemplateId = aws_launch_template.this.id
        Version          = tostring(aws_launch_template.this.latest_version)
      }
    })
    PREFERENCES = jsonencode({
      MinHealthyPercentage = 100
      MaxHealthyPercentage = 200
      SkipMatching         = true
      InstanceWarmup       = var.health_check_grace_period
      AutoRollback         = true
      AlarmSpecification   = { Alarms = [for alarm in aws_cloudwatch_metric_alarm.rollout : alarm.alarm_name] }
    })
  }
}
