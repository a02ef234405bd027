terraform {
  # Ephemeral resources and write-only arguments (passwords that never reach the state) need
  # Terraform 1.11.
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100, < 6.0"
    }
  }
}
