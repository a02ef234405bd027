#!/usr/bin/env bash
# Runs once, on the first start of an empty postgres volume: creates the basic-auth database
# beside POSTGRES_DB. (`mlflow-stack serve` also creates it when missing, for RDS and native.)
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=auth_db="${MLFLOW_STACK_AUTH_DB:-mlflow_auth}" <<'SQL'
SELECT format('CREATE DATABASE %I', :'auth_db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'auth_db')\gexec
SQL
