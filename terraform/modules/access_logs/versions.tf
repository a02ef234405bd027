terraform {
  # The same Terraform as the rest of the stack (write-only arguments, ephemeral values).
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100, < 6.0"
    }
  }
}
