data "aws_region" "current" {}

data "aws_partition" "current" {}

data "aws_ssm_parameter" "ami" {
  count = var.ami_id == null ? 1 : 0

  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

locals {
  region    = data.aws_region.current.name
  partition = data.aws_partition.current.partition
  tls       = var.certificate_arn != null
  ami_id    = var.ami_id != null ? var.ami_id : data.aws_ssm_parameter.ami[0].insecure_value

  create_repository = var.image == null
  image             = local.create_repository ? "${aws_ecr_repository.this[0].repository_url}:${var.image_tag}" : var.image
  # The registry to log in to before pulling: only for an image in Amazon ECR.
  registry = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?/", local.image)) ? split("/", local.image)[0] : ""

  container_port = 5000
  ipv6_cidrs     = [for cidr in var.allowed_cidrs : cidr if strcontains(cidr, ":")]
  ipv4_cidrs     = [for cidr in var.allowed_cidrs : cidr if !strcontains(cidr, ":")]

  # Host names clients may use (MLFLOW_STACK_ALLOWED_HOSTS): the domain name, the load
  # balancer's name, and the instance's public name and address, which the boot script reads
  # from the instance metadata. Localhost and private addresses are always allowed.
  allowed_hosts = join(",", concat(
    var.domain_name == null ? [] : [var.domain_name],
    local.tls ? [aws_lb.this[0].dns_name] : [],
    ["$${PUBLIC_HOSTNAME}", "$${PUBLIC_IPV4}"],
  ))

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
  }

  # The server's env file: every variable of src/mlflow_stack/settings.py exactly once (a test
  # compares the names). Values written "$${NAME}" are shell variables that the boot script
  # fills in on the instance: passwords read from Secrets Manager through the instance role,
  # and names read from the instance metadata. They never pass through Terraform.
  environment = merge(local.setting_defaults, var.settings, {
    POSTGRES_HOST                  = var.database_address
    POSTGRES_PORT                  = tostring(var.database_port)
    POSTGRES_USER                  = var.database_username
    POSTGRES_PASSWORD              = "$${POSTGRES_PASSWORD}"
    POSTGRES_DB                    = var.database_name
    POSTGRES_SSLMODE               = "require"
    MLFLOW_STACK_S3_BUCKET         = var.bucket_name
    MLFLOW_STACK_S3_ENDPOINT_URL   = "" # empty: AWS S3
    MLFLOW_STACK_S3_ACCESS_KEY     = "" # empty (with the secret key): the instance role
    MLFLOW_STACK_S3_SECRET_KEY     = ""
    MLFLOW_STACK_S3_REGION         = local.region
    MLFLOW_STACK_HOST              = "0.0.0.0" # inside the container
    MLFLOW_STACK_PORT              = tostring(local.container_port)
    MLFLOW_STACK_ALLOWED_HOSTS     = local.allowed_hosts
    MLFLOW_STACK_TRUSTED_PROXIES   = join(",", var.trusted_proxies)
    MLFLOW_AUTH_ADMIN_PASSWORD     = "$${MLFLOW_AUTH_ADMIN_PASSWORD}"
    MLFLOW_FLASK_SERVER_SECRET_KEY = "$${MLFLOW_FLASK_SERVER_SECRET_KEY}"
  })

  user_data = templatefile("${path.module}/user_data.sh.tftpl", {
    environment      = local.environment
    region           = local.region
    image            = local.image
    registry         = local.registry
    container_port   = local.container_port
    log_group        = aws_cloudwatch_log_group.this.name
    db_secret_arn    = var.database_secret_arn
    app_secret_arn   = aws_secretsmanager_secret.app.arn
    secrets_version  = var.secrets_version
    password_version = var.database_password_version
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
# Application secret: admin password and Flask secret key (generated, write-only)
################################################################################

resource "aws_secretsmanager_secret" "app" {
  #checkov:skip=CKV2_AWS_57:The admin password is used only when the admin account is first created and the Flask key is read at start; rotate by raising secrets_version, which also replaces the instance.
  name_prefix             = "${var.name}/mlflow-"
  description             = "MLflow admin password and Flask secret key of ${var.name}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = var.tags
}

resource "aws_secretsmanager_secret_version" "app" {
  secret_id = aws_secretsmanager_secret.app.id
  # Keys named after the settings they fill. Write-only: never in the state.
  secret_string_wo = jsonencode({
    MLFLOW_AUTH_ADMIN_PASSWORD     = var.admin_password
    MLFLOW_FLASK_SERVER_SECRET_KEY = var.flask_secret_key
  })
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
# Security groups: the MLflow port from allowed_cidrs (or from the load balancer only)
################################################################################

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-server-"
  description = "MLflow server of ${var.name}"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-server" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "mlflow_ipv4" {
  for_each = local.tls ? toset([]) : toset(local.ipv4_cidrs)

  security_group_id = aws_security_group.this.id
  description       = "MLflow from an allowed network"
  ip_protocol       = "tcp"
  from_port         = local.container_port
  to_port           = local.container_port
  cidr_ipv4         = each.value

  tags = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "mlflow_ipv6" {
  for_each = local.tls ? toset([]) : toset(local.ipv6_cidrs)

  security_group_id = aws_security_group.this.id
  description       = "MLflow from an allowed network"
  ip_protocol       = "tcp"
  from_port         = local.container_port
  to_port           = local.container_port
  cidr_ipv6         = each.value

  tags = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "mlflow_from_load_balancer" {
  count = local.tls ? 1 : 0

  security_group_id            = aws_security_group.this.id
  description                  = "MLflow from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.alb[0].id

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

resource "aws_security_group" "alb" {
  count = local.tls ? 1 : 0

  name_prefix = "${var.name}-alb-"
  description = "HTTPS load balancer of ${var.name}"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-alb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "https_ipv4" {
  for_each = local.tls ? toset(local.ipv4_cidrs) : toset([])

  security_group_id = aws_security_group.alb[0].id
  description       = "HTTPS from an allowed network"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value

  tags = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "https_ipv6" {
  for_each = local.tls ? toset(local.ipv6_cidrs) : toset([])

  security_group_id = aws_security_group.alb[0].id
  description       = "HTTPS from an allowed network"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv6         = each.value

  tags = var.tags
}

resource "aws_vpc_security_group_egress_rule" "alb_to_server" {
  count = local.tls ? 1 : 0

  security_group_id            = aws_security_group.alb[0].id
  description                  = "MLflow on the server"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.this.id

  tags = var.tags
}

################################################################################
# HTTPS load balancer (only with certificate_arn)
################################################################################

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:Access logs would need a second bucket (SSE-S3 only) that itself needs logging; the MLflow container's log goes to CloudWatch Logs.
  #checkov:skip=CKV2_AWS_28:Only allowed_cidrs reach the load balancer and MLflow requires a login; a WAF web ACL and its rules would cost more than the rest of a small stack.
  count = local.tls ? 1 : 0

  name                       = var.name
  load_balancer_type         = "application"
  internal                   = false
  security_groups            = [aws_security_group.alb[0].id]
  subnets                    = var.load_balancer_subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  idle_timeout               = 300

  tags = var.tags
}

resource "aws_lb_target_group" "this" {
  count = local.tls ? 1 : 0

  name        = "${var.name}-server"
  port        = local.container_port
  protocol    = "HTTP"
  target_type = "instance"
  vpc_id      = var.vpc_id

  health_check {
    path                = "/health"
    matcher             = "200"
    interval            = 15
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = var.tags
}

resource "aws_lb_target_group_attachment" "this" {
  count = local.tls ? 1 : 0

  target_group_arn = aws_lb_target_group.this[0].arn
  target_id        = aws_instance.this.id
  port             = local.container_port
}

# HTTPS only: there is no port 80 listener to redirect from.
resource "aws_lb_listener" "https" {
  count = local.tls ? 1 : 0

  load_balancer_arn = aws_lb.this[0].arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this[0].arn
  }

  tags = var.tags
}

################################################################################
# The instance
################################################################################

resource "aws_instance" "this" {
  #checkov:skip=CKV_AWS_88:The public address is the instance's way out to ECR, Secrets Manager and SSM without a NAT gateway, and how allowed_cidrs reach it without TLS; its security group admits only allowed_cidrs or the load balancer.
  ami                         = local.ami_id
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_id
  vpc_security_group_ids      = [aws_security_group.this.id]
  associate_public_ip_address = var.associate_public_ip_address
  iam_instance_profile        = aws_iam_instance_profile.this.name
  ebs_optimized               = true
  monitoring                  = var.detailed_monitoring

  user_data                   = local.user_data
  user_data_replace_on_change = true

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
    # 2 hops: the container (one bridge away) reads the instance role's credentials.
    http_put_response_hop_limit = 2
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size
    encrypted             = true
    kms_key_id            = var.kms_key_arn
    delete_on_termination = true
  }

  tags        = merge(var.tags, { Name = "${var.name}-server" })
  volume_tags = merge(var.tags, { Name = "${var.name}-server" })

  lifecycle {
    # A newer Amazon Linux image must not replace a running server on some later apply; use
    # `terraform apply -replace=module.server.aws_instance.this` to move to it.
    ignore_changes = [ami]
  }

  # The boot script reads both secrets: they must hold a value before it runs.
  depends_on = [aws_secretsmanager_secret_version.app]
}
