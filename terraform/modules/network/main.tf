data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Only standard zones, and only the first two by name, which stay the same when AWS adds zones (new zones get later letters); set availability_zones to pin them explicitly.
  count = local.create && length(var.availability_zones) == 0 ? 1 : 0

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

locals {
  create = var.vpc_id == null
  azs = (!local.create ? []
    : length(var.availability_zones) > 0 ? var.availability_zones
    : slice(sort(data.aws_availability_zones.available[0].names), 0, 2)
  )

  # 10.42.0.0/16 -> public 10.42.0.0/24 and 10.42.1.0/24, private 10.42.10.0/24 and 10.42.11.0/24
  public_cidrs  = [for i in range(2) : cidrsubnet(var.vpc_cidr, 8, i)]
  private_cidrs = [for i in range(2) : cidrsubnet(var.vpc_cidr, 8, i + 10)]

  flow_logs = local.create && var.enable_flow_logs
  nat       = local.create && var.egress == "nat"
  endpoints = local.create && var.egress == "endpoints" ? toset(var.interface_endpoints) : toset([])
  region    = data.aws_region.current.name
}

################################################################################
# VPC, two public and two private subnets in two availability zones
################################################################################

resource "aws_vpc" "this" {
  count = local.create ? 1 : 0

  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = merge(var.tags, { Name = var.name })
}

# The VPC's default security group: no rules at all, so nothing that lands in it by accident
# can talk to anything.
resource "aws_default_security_group" "this" {
  count = local.create ? 1 : 0

  vpc_id = aws_vpc.this[0].id

  tags = merge(var.tags, { Name = "${var.name}-default-closed" })
}

resource "aws_internet_gateway" "this" {
  count = local.create ? 1 : 0

  vpc_id = aws_vpc.this[0].id

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_subnet" "public" {
  count = local.create ? 2 : 0

  vpc_id            = aws_vpc.this[0].id
  cidr_block        = local.public_cidrs[count.index]
  availability_zone = local.azs[count.index]
  # Instances ask for a public address explicitly; nothing gets one by default.
  map_public_ip_on_launch = false

  tags = merge(var.tags, { Name = "${var.name}-public-${local.azs[count.index]}", Tier = "public" })
}

resource "aws_subnet" "private" {
  count = local.create ? 2 : 0

  vpc_id                  = aws_vpc.this[0].id
  cidr_block              = local.private_cidrs[count.index]
  availability_zone       = local.azs[count.index]
  map_public_ip_on_launch = false

  tags = merge(var.tags, { Name = "${var.name}-private-${local.azs[count.index]}", Tier = "private" })
}

resource "aws_route_table" "public" {
  count = local.create ? 1 : 0

  vpc_id = aws_vpc.this[0].id

  tags = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "public_internet" {
  count = local.create ? 1 : 0

  route_table_id         = aws_route_table.public[0].id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this[0].id
}

resource "aws_route_table_association" "public" {
  count = local.create ? 2 : 0

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public[0].id
}

# Private subnets hold only the database: no route out of the VPC.
resource "aws_route_table" "private" {
  count = local.create ? 1 : 0

  vpc_id = aws_vpc.this[0].id

  tags = merge(var.tags, { Name = "${var.name}-private" })
}

resource "aws_route_table_association" "private" {
  count = local.create ? 2 : 0

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[0].id
}


################################################################################
# Egress of the private subnets: S3 through a gateway endpoint (free); everything else through
# one NAT gateway, or through interface endpoints with no route to the internet
################################################################################

resource "aws_vpc_endpoint" "s3" {
  count = local.create ? 1 : 0

  vpc_id            = aws_vpc.this[0].id
  service_name      = "com.amazonaws.${local.region}.s3"
  vpc_endpoint_type = "Gateway"
  # The servers' artifacts, the image's layers (ECR keeps them in S3) and Amazon Linux's
  # package repositories: the buckets' own policies and the servers' role decide the rest.
  route_table_ids = [aws_route_table.private[0].id]

  tags = merge(var.tags, { Name = "${var.name}-s3" })
}

resource "aws_eip" "nat" {
  count = local.nat ? 1 : 0

  domain = "vpc"

  tags = merge(var.tags, { Name = "${var.name}-nat" })

  depends_on = [aws_internet_gateway.this]
}

resource "aws_nat_gateway" "this" {
  count = local.nat ? 1 : 0

  allocation_id = aws_eip.nat[0].id
  subnet_id     = aws_subnet.public[0].id

  tags = merge(var.tags, { Name = var.name })

  depends_on = [aws_internet_gateway.this]
}

resource "aws_route" "private_nat" {
  count = local.nat ? 1 : 0

  route_table_id         = aws_route_table.private[0].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[0].id
}

resource "aws_security_group" "endpoints" {
  count = length(local.endpoints) > 0 ? 1 : 0

  name_prefix = "${var.name}-endpoints-"
  description = "Interface endpoints of ${var.name}: HTTPS from inside the VPC"
  vpc_id      = aws_vpc.this[0].id

  tags = merge(var.tags, { Name = "${var.name}-endpoints" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_https" {
  count = length(local.endpoints) > 0 ? 1 : 0

  security_group_id = aws_security_group.endpoints[0].id
  description       = "HTTPS from the VPC (the servers)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.vpc_cidr

  tags = var.tags
}

resource "aws_vpc_endpoint" "interface" {
  for_each = local.endpoints

  vpc_id              = aws_vpc.this[0].id
  service_name        = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true

  tags = merge(var.tags, { Name = "${var.name}-${each.key}" })
}
################################################################################
# Flow logs of the whole VPC to CloudWatch Logs (KMS-encrypted)
################################################################################

resource "aws_cloudwatch_log_group" "flow_logs" {
  count = local.flow_logs ? 1 : 0

  name              = "/aws/vpc-flow-logs/${var.name}"
  retention_in_days = var.flow_logs_retention_days
  kms_key_id        = var.kms_key_arn

  tags = var.tags
}

resource "aws_iam_role" "flow_logs" {
  count = local.flow_logs ? 1 : 0

  name_prefix = "${var.name}-flow-logs-"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "vpc-flow-logs.amazonaws.com" }
      Condition = { StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id } }
    }]
  })

  tags = var.tags
}

resource "aws_iam_role_policy" "flow_logs" {
  count = local.flow_logs ? 1 : 0

  name = "write-flow-logs"
  role = aws_iam_role.flow_logs[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
      Resource = "${aws_cloudwatch_log_group.flow_logs[0].arn}:*"
    }]
  })
}

resource "aws_flow_log" "this" {
  count = local.flow_logs ? 1 : 0

  vpc_id               = aws_vpc.this[0].id
  traffic_type         = "ALL"
  log_destination_type = "cloud-watch-logs"
  log_destination      = aws_cloudwatch_log_group.flow_logs[0].arn
  iam_role_arn         = aws_iam_role.flow_logs[0].arn

  tags = merge(var.tags, { Name = var.name })
}
