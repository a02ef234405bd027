#!/usr/bin/python3
"""`mc` of the TEST STAND-IN for minio/mc (see the Dockerfile beside it): installed as /usr/bin/mc.

It implements the subcommands minio/provision.sh runs, with MinIO's semantics, against the MinIO
stand-in (SeaweedFS): S3 calls through botocore, and `mc admin` through the IAM API that
SeaweedFS's S3 gateway serves on the same port, signed with the alias's (root) key, as the real
mc signs MinIO's admin API:

    mc alias set [--api S3v4] ALIAS URL ACCESSKEY SECRETKEY    saved in the config dir
    mc ls ALIAS                                                ListBuckets
    mc mb [--ignore-existing] ALIAS/BUCKET...                  CreateBucket
    mc admin policy create ALIAS NAME FILE      CreatePolicy (a changed document replaces it)
    mc admin user add ALIAS ACCESSKEY SECRETKEY CreateUser + CreateAccessKey (a new secret
                                                replaces the key, as MinIO resets it)
    mc admin policy attach ALIAS POLICY... --user USER         AttachUserPolicy

Every one is idempotent where MinIO's is: a policy created again with the same document, a user
added again with the same secret and a policy attached again change nothing. The config dir is
--config-dir/-C, else MC_CONFIG_DIR, else ~/.mc. Errors print `mc: <ERROR> ...` and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

REGION = "us-east-1"
IAM_VERSION = "2010-05-08"


class RequestError(Exception):
    """A request failed: ``code`` is the service's error code (empty for a network error)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})" if code else message)
        self.code = code


def fatal(what: str, why: object) -> NoReturn:
    print(f"mc: <ERROR> {what}. {why}", file=sys.stderr)
    sys.exit(1)


@dataclass(frozen=True)
class Alias:
    name: str
    url: str
    access_key: str
    secret_key: str


# --- configuration ---


def config_file(args: argparse.Namespace) -> Path:
    directory = args.config_dir or os.environ.get("MC_CONFIG_DIR") or Path.home() / ".mc"
    return Path(directory) / "config.json"


def read_config(args: argparse.Namespace) -> dict[str, Any]:
    path = config_file(args)
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return {"version": "10", "aliases": {}}
    except (OSError, ValueError) as error:
        fatal(f"Unable to load mc configuration file `{path}`", error)
    return config


def alias_of(args: argparse.Namespace, target: str) -> tuple[Alias, str]:
    """The alias a TARGET (``ALIAS`` or ``ALIAS/PATH``) names, and the path after it."""
    name, _, path = target.partition("/")
    entry = read_config(args).get("aliases", {}).get(name)
    if entry is None:
        fatal(f"Unable to find alias `{name}`", "Use `mc alias set` to add it first.")
    return Alias(name, entry["url"], entry["accessKey"], entry["secretKey"]), path.strip("/")


# --- the two APIs ---


def s3(alias: Alias) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=alias.url,
        region_name=REGION,
        aws_access_key_id=alias.access_key,
        aws_secret_access_key=alias.secret_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def s3_call(what: str, call: Any, **params: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(**params)
    except ClientError as error:
        details = error.response.get("Error", {})
        raise RequestError(details.get("Code", ""), details.get("Message", "") or what) from None
    except BotoCoreError as error:
        raise RequestError("", str(error)) from None


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def texts(root: ET.Element, name: str) -> list[str]:
    """The text of every element called ``name`` (any namespace) under ``root``."""
    return [element.text or "" for element in root.iter() if local_name(element.tag) == name]


def iam(alias: Alias, action: str, **params: str) -> ET.Element:
    """One IAM API call (a form POST to the S3 port, SigV4-signed for the iam service)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = urllib.parse.urlencode({"Action": action, "Version": IAM_VERSION, **params})
    url = alias.url.rstrip("/") + "/"
    signed = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(Credentials(alias.access_key, alias.secret_key), "iam", REGION).add_auth(signed)
    request = urllib.request.Request(  # noqa: S310 - the alias's http(s) URL
        url, data=body.encode(), headers=dict(signed.headers.items()), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return ET.fromstring(response.read())  # noqa: S314 - our own server's answer
    except urllib.error.HTTPError as error:
        answer = error.read()
        try:
            root = ET.fromstring(answer)  # noqa: S314
        except ET.ParseError:
            raise RequestError(
                f"HTTP {error.code}", answer.decode(errors="replace")[:200]
            ) from None
        code, message = texts(root, "Code"), texts(root, "Message")
        raise RequestError(
            code[0] if code else f"HTTP {error.code}", message[0] if message else ""
        ) from None
    except (urllib.error.URLError, OSError) as error:
        raise RequestError("", f"{url} does not answer: {error}") from None


def policy_arn(name: str) -> str:
    return f"arn:aws:iam:::policy/{name}"


# --- commands ---


def alias_set(args: argparse.Namespace) -> None:
    if args.api and args.api.lower() not in ("s3v4", "s3v2"):
        fatal("Unrecognized API signature", f"`{args.api}`: use S3v4 or S3v2.")
    if not args.url.startswith(("http://", "https://")):
        fatal("Invalid URL", f"`{args.url}`: use http:// or https://.")
    alias = Alias(args.alias, args.url.rstrip("/"), args.access_key, args.secret_key)
    if not args.api:  # like mc: probe the server when the signature is not given
        try:
            s3_call("ListBuckets", s3(alias).list_buckets)
        except RequestError as error:
            fatal("Unable to initialize new alias from the provided credentials", error)
    path = config_file(args)
    config = read_config(args)
    config.setdefault("aliases", {})[args.alias] = {
        "url": alias.url,
        "accessKey": alias.access_key,
        "secretKey": alias.secret_key,
        "api": "s3v4",
        "path": args.path,
    }
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(config, indent=2) + "\n")
    print(f"Added `{args.alias}` successfully.")


def ls(args: argparse.Namespace) -> None:
    alias, path = alias_of(args, args.target)
    if path:
        fatal("Not implemented by the stand-in", "`mc ls` lists an alias's buckets only.")
    try:
        buckets = s3_call("ListBuckets", s3(alias).list_buckets)["Buckets"]
    except RequestError as error:
        fatal(f"Unable to list folder `{args.target}`", error)
    for bucket in buckets:
        created = bucket["CreationDate"].strftime("%Y-%m-%d %H:%M:%S %Z")
        print(f"[{created}]     0B {bucket['Name']}/")


def mb(args: argparse.Namespace) -> None:
    for target in args.targets:
        alias, bucket = alias_of(args, target)
        if not bucket or "/" in bucket:
            fatal(f"Unable to make bucket `{target}`", "Give ALIAS/BUCKET.")
        try:
            s3_call("CreateBucket", s3(alias).create_bucket, Bucket=bucket)
        except RequestError as error:
            exists = error.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")
            if not (exists and args.ignore_existing):
                fatal(f"Unable to make bucket `{target}`", error)
        print(f"Bucket created successfully `{target}`.")


def canonical(document: Any) -> str:
    """A policy document in a form that compares equal however it was written (key order,
    one string or a list, statement ids)."""
    statements = document.get("Statement", [])
    statements = [statements] if isinstance(statements, dict) else statements

    def normal(statement: dict[str, Any]) -> dict[str, Any]:
        listed = ("Action", "NotAction", "Resource", "NotResource")
        return {
            key: sorted([value] if isinstance(value, str) else value) if key in listed else value
            for key, value in statement.items()
            if key != "Sid"
        }

    shown = sorted(json.dumps(normal(s), sort_keys=True) for s in statements)
    return json.dumps({"Version": document.get("Version"), "Statement": shown}, sort_keys=True)


def stored_document(alias: Alias, name: str) -> Any | None:
    """The policy's current document, or None when there is no such policy."""
    try:
        policy = iam(alias, "GetPolicy", PolicyArn=policy_arn(name))
    except RequestError as error:
        if error.code == "NoSuchEntity":
            return None
        raise
    version = (texts(policy, "DefaultVersionId") or ["v1"])[0]
    answer = iam(alias, "GetPolicyVersion", PolicyArn=policy_arn(name), VersionId=version)
    document = (texts(answer, "Document") or ["{}"])[0]
    if document.startswith("%"):  # AWS URL-encodes it
        document = urllib.parse.unquote(document)
    return json.loads(document)


def users_with_policy(alias: Alias, name: str) -> list[str]:
    found = []
    for user in texts(iam(alias, "ListUsers"), "UserName"):
        try:
            answer = iam(alias, "ListAttachedUserPolicies", UserName=user)
        except RequestError as error:
            if error.code == "NoSuchEntity":  # a static identity (the root): none attached
                continue
            raise
        if name in texts(answer, "PolicyName"):
            found.append(user)
    return found


def admin_policy_create(args: argparse.Namespace) -> None:
    alias, _ = alias_of(args, args.target)
    try:
        text = Path(args.file).read_text()
        document = json.loads(text)
    except (OSError, ValueError) as error:
        fatal("Unable to create new policy", f"cannot read policy file `{args.file}`: {error}")
    try:
        stored = stored_document(alias, args.name)
        if stored is None:
            iam(alias, "CreatePolicy", PolicyName=args.name, PolicyDocument=text)
        elif canonical(stored) != canonical(document):
            # MinIO replaces a policy in place. SeaweedFS's CreatePolicyVersion refuses some
            # s3: action names its policy engine enforces, so: detach, recreate, reattach.
            users = users_with_policy(alias, args.name)
            for user in users:
                iam(alias, "DetachUserPolicy", UserName=user, PolicyArn=policy_arn(args.name))
            iam(alias, "DeletePolicy", PolicyArn=policy_arn(args.name))
            iam(alias, "CreatePolicy", PolicyName=args.name, PolicyDocument=text)
            for user in users:
                iam(alias, "AttachUserPolicy", UserName=user, PolicyArn=policy_arn(args.name))
    except RequestError as error:
        fatal("Unable to create new policy", error)
    print(f"Created policy `{args.name}` successfully.")


def signs_with(alias: Alias, access_key: str, secret_key: str) -> bool:
    """Whether the server accepts this key pair (any authenticated answer will do)."""
    try:
        iam(Alias(alias.name, alias.url, access_key, secret_key), "GetUser")
    except RequestError as error:
        if error.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"):
            return error.code == "AccessDenied"
        raise
    return True


def admin_user_add(args: argparse.Namespace) -> None:
    alias, _ = alias_of(args, args.target)
    user, secret = args.access_key, args.secret_key
    # MinIO's rules for a user's keys (internal/auth: IsAccessKeyValid, IsSecretKeyValid)
    if len(user) < 3 or any(c in user for c in "=,"):
        fatal("Unable to add new user", "access key: at least 3 characters, no '=' or ','")
    if len(secret) < 8:
        fatal("Unable to add new user", "secret key length should be at least 8")
    if user == alias.access_key:
        fatal("Unable to add new user", "the root user's access key cannot be a user's")
    try:
        try:
            iam(alias, "GetUser", UserName=user)
        except RequestError as error:
            if error.code != "NoSuchEntity":
                raise
            iam(alias, "CreateUser", UserName=user)
        keys = texts(iam(alias, "ListAccessKeys", UserName=user), "AccessKeyId")
        if user in keys and not signs_with(alias, user, secret):
            iam(alias, "DeleteAccessKey", UserName=user, AccessKeyId=user)
            keys.remove(user)
        if user not in keys:
            iam(alias, "CreateAccessKey", UserName=user, AccessKeyId=user, SecretAccessKey=secret)
    except RequestError as error:
        fatal("Unable to add new user", error)
    print(f"Added user `{user}` successfully.")


def admin_policy_attach(args: argparse.Namespace) -> None:
    alias, _ = alias_of(args, args.target)
    if not args.user:
        fatal("Not implemented by the stand-in", "attach to a --user only")
    names = [name for given in args.policies for name in given.split(",") if name]
    try:
        for name in names:
            iam(alias, "AttachUserPolicy", UserName=args.user, PolicyArn=policy_arn(name))
    except RequestError as error:
        fatal("Unable to attach the policy", error)
    print(f"Attached Policies: {names}\nTo User: {args.user}")


# --- command line ---


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config-dir", "-C", default=None)
    for flag in ("--quiet", "--no-color", "--disable-pager"):
        common.add_argument(flag, action="store_true")

    top = argparse.ArgumentParser(
        prog="mc",
        description="mc of the MinIO test stand-in: only alias set, ls, mb, admin policy "
        "create/attach and admin user add are implemented",
    )
    commands = top.add_subparsers(dest="command", required=True)

    alias = commands.add_parser("alias").add_subparsers(dest="sub", required=True)
    alias_set_ = alias.add_parser("set", parents=[common])
    alias_set_.add_argument("--api", default="")
    alias_set_.add_argument("--path", default="auto", choices=["auto", "on", "off"])
    for name in ("alias", "url", "access_key", "secret_key"):
        alias_set_.add_argument(name)
    alias_set_.set_defaults(run=alias_set)

    ls_ = commands.add_parser("ls", parents=[common])
    ls_.add_argument("target")
    ls_.set_defaults(run=ls)

    mb_ = commands.add_parser("mb", parents=[common])
    mb_.add_argument("--ignore-existing", "-p", action="store_true")
    mb_.add_argument("targets", nargs="+")
    mb_.set_defaults(run=mb)

    admin = commands.add_parser("admin").add_subparsers(dest="area", required=True)
    policy = admin.add_parser("policy").add_subparsers(dest="sub", required=True)
    create = policy.add_parser("create", parents=[common])
    for name in ("target", "name", "file"):
        create.add_argument(name)
    create.set_defaults(run=admin_policy_create)
    attach = policy.add_parser("attach", parents=[common])
    attach.add_argument("--user", default="")
    attach.add_argument("target")
    attach.add_argument("policies", nargs="+")
    attach.set_defaults(run=admin_policy_attach)

    user = admin.add_parser("user").add_subparsers(dest="sub", required=True)
    add = user.add_parser("add", parents=[common])
    for name in ("target", "access_key", "secret_key"):
        add.add_argument(name)
    add.set_defaults(run=admin_user_add)
    return top


def main() -> None:
    args = parser().parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
