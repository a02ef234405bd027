"""Refuse malformed or hostile API input with a 4xx before MLflow sees it.

MLflow 3.17 answers such input with a 500 (which its client retries for minutes), or accepts it
and stores something else: a raw JSON ``NaN`` metric becomes 0, a step of 2**70 is dropped,
because its handlers carry on with a half-parsed protobuf message when their own looser checks
pass; and its auth layer reads the raw JSON before any of that, so a run id sent as a number
reaches PostgreSQL and its error text reaches the caller. Here every JSON body and query string
of an API route is checked, once, against what the route's protobuf request type accepts
(:mod:`mlflow_stack.server.protojson`), plus what PostgreSQL cannot store (NUL characters, unpaired
surrogates, integers beyond 64 bits) and limits on size and nesting.

Two requests are refused with 403 because they would make the server read storage on the
caller's behalf with its own credentials: a model version whose ``source`` is not a
``runs:/``, ``models:/`` or ``mlflow-artifacts:`` URI (MLflow checks the caller's permission
for those three only; ``s3://<bucket>/<experiment>/...`` would let anyone read any
experiment's artifacts through ``model-versions/get-artifact``), and an experiment whose
``artifact_location`` is not an ``mlflow-artifacts:`` URI.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from mlflow_stack.server.asgi import (
    ASGIApp,
    BodyTooLargeError,
    ClientGoneError,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    replay,
    respond_error,
)
from mlflow_stack.server.protojson import ProtoJsonError, check_field, check_message, is_repeated

log = logging.getLogger(__name__)

API_PREFIXES = ("/api/", "/ajax-api/")
#: Routes whose body is the bytes of an artifact, streamed on to S3 and never parsed.
ARTIFACT_UPLOADS = re.compile(r"/mlflow-artifacts/artifacts(/|$)|/upload-artifact$")
FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data")
MAX_JSON_BYTES = 64 * 2**20
MAX_DEPTH = 64
INT64 = (-(2**63), 2**63 - 1)
#: Model-version sources MLflow checks the caller's permission for; prompts use placeholders.
VERSION_SOURCE_SCHEMES = frozenset({"runs", "models", "mlflow-artifacts"})
PROMPT_SOURCES = frozenset({"dummy-source", "prompt-template"})
_UNPAIRED_SURROGATE = re.compile(
    "[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]"
)
_FLASK_PARAMETER = re.compile(r"<(?:(\w+):)?(\w+)>")


@dataclass
class Refusal(Exception):  # noqa: N818 - an answer, not a failure
    status: int
    error_code: str
    message: str


def _invalid(message: str) -> Refusal:
    return Refusal(400, "INVALID_PARAMETER_VALUE", message)


class _ForbiddenConstantError(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _ForbiddenConstantError(name)


def decode_json(body: bytes) -> Any:
    """Python's JSON, without the bare NaN/Infinity it accepts; numbers too large for a double
    (1e400 becomes inf) are caught by the value checks."""
    return json.loads(body, parse_constant=_refuse_constant)


def check_values(value: Any) -> None:
    """What no API field may hold, wherever it is: nesting deeper than MAX_DEPTH, NUL
    characters and unpaired surrogates (PostgreSQL cannot store them: a 500 today), integers
    beyond 64 bits, and non-finite numbers."""
    # (value, depth, parent entry, key): the path is spelled out only for an error message.
    stack: list[tuple[Any, int, Any, Any]] = [(value, 0, None, None)]
    while stack:
        entry = stack.pop()
        item, depth = entry[0], entry[1]
        if isinstance(item, str):
            _check_text(item, _path_of(entry))
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise _invalid(f"the request body is nested more than {MAX_DEPTH} levels deep")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    _check_text(key, f"a field name in {_path_of(entry)}")
                stack.append((child, depth + 1, entry, key))
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64[0] <= item <= INT64[1]:
                raise _invalid(f"{_path_of(entry)}={item} does not fit in 64 bits")
        elif isinstance(item, float) and item - item != 0:  # inf or nan
            raise _invalid(
                f'{_path_of(entry)} is too large a number: send the string "Infinity" if you '
                "mean it"
            )


def _path_of(entry: tuple[Any, int, Any, Any]) -> str:
    keys = []
    while entry[2] is not None:
        keys.append(entry[3])
        entry = entry[2]
    text = ""
    for key in reversed(keys):
        text += f"[{key}]" if isinstance(key, int) else f".{key}" if text else str(key)
    return text or "the request body"


def _check_text(text: str, what: str) -> None:
    if "\x00" in text:
        raise _invalid(f"{what} contains a NUL character (\\u0000), which cannot be stored")
    if _UNPAIRED_SURROGATE.search(text):
        raise _invalid(f"{what} contains an unpaired UTF-16 surrogate, which cannot be stored")


# --- which protobuf request type each API route takes ---


@dataclass(frozen=True)
class Routes:
    exact: dict[tuple[str, str], Descriptor]
    patterns: list[tuple[str, re.Pattern[str], Descriptor]]

    def request_type(self, method: str, path: str) -> Descriptor | None:
        found = self.exact.get((method, path))
        if found is not None:
            return found
        for route_method, pattern, descriptor in self.patterns:
            if route_method == method and pattern.fullmatch(path):
                return descriptor
        return None


@cache
def mlflow_routes() -> Routes:
    """Every proto-backed route MLflow's server registers, with its request message type."""
    from mlflow.server.handlers import get_endpoints

    exact: dict[tuple[str, str], Descriptor] = {}
    patterns: list[tuple[str, re.Pattern[str], Descriptor]] = []
    for path, request_class, methods in get_endpoints(get_handler=lambda cls: cls):
        descriptor = getattr(request_class, "DESCRIPTOR", None)
        if not isinstance(descriptor, Descriptor):
            continue  # a handler without a protobuf request type: generic checks only
        for method in methods:
            if "<" not in path:
                exact[(method, path)] = descriptor
            else:
                patterns.append((method, _path_pattern(path), descriptor))
    return Routes(exact, patterns)


def _path_pattern(flask_path: str) -> re.Pattern[str]:
    parts, position = [], 0
    for match in _FLASK_PARAMETER.finditer(flask_path):
        parts.append(re.escape(flask_path[position : match.start()]))
        parts.append(".+" if match.group(1) == "path" else "[^/]+")
        position = match.end()
    parts.append(re.escape(flask_path[position:]))
    return re.compile("".join(parts))


# --- the checks of one request ---


def check_path(path: str) -> None:
    if "\x00" in path:
        raise _invalid("the URL path contains a NUL character")
    if "\\" in path:
        raise _invalid("the URL path contains a backslash: artifact paths use /")


def query_arguments(query_string: bytes) -> list[tuple[str, str]]:
    """Decoded ``name=value`` pairs; invalid UTF-8 is refused rather than replaced."""
    pairs = []
    for item in query_string.split(b"&"):
        if not item:
            continue
        raw_name, _, raw_value = item.partition(b"=")
        try:
            name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode()
            value = unquote_to_bytes(raw_value.replace(b"+", b" ")).decode()
        except UnicodeDecodeError:
            raise _invalid("the query string is not valid UTF-8") from None
        pairs.append((name, value))
    return pairs


def check_query(arguments: list[tuple[str, str]], request_type: Descriptor | None) -> None:
    for name, value in arguments:
        _check_text(name, "a query parameter name")
        _check_text(value, f"query parameter {name!r}")
        if "path" in name.lower() and "\\" in value:
            raise _invalid(f"query parameter {name!r} contains a backslash: artifact paths use /")
    if request_type is None:
        return
    for field in request_type.fields:
        values = [value for name, value in arguments if name == field.name]
        if not values or field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            continue
        if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
            for value in values[:1] if not is_repeated(field) else values:
                if value.lower() not in ("true", "false"):  # MLflow's own words
                    raise _invalid(f"Invalid boolean value: {value}, must be 'true' or 'false'.")
            continue
        value = values if is_repeated(field) else values[0]
        try:
            check_field(value, field, field.name)
        except ProtoJsonError as error:
            mlflows = mlflows_type_message(field, value)
            raise _invalid(mlflows or f"query parameter {error}") from None


def check_body(document: Any, request_type: Descriptor | None) -> None:
    if isinstance(document, str):  # old clients double-encode: MLflow decodes it once more
        try:
            document = decode_json(document.encode())
        except (ValueError, RecursionError):
            document = None
    if not isinstance(document, dict):
        raise _invalid("the request body must be a JSON object")
    check_values(document)
    if request_type is None:
        return
    try:
        check_message(document, request_type)
    except ProtoJsonError as error:
        raise _invalid(mlflows_message(document, request_type) or str(error)) from None
    for key, value in _strings_named_path(document):
        if "\\" in value:
            raise _invalid(f"{key} contains a backslash: artifact paths use /")
    _check_storage_uris(document, request_type)


# --- MLflow's own words where its handler would refuse the same input ---
#
# When protobuf cannot parse a request, MLflow's handlers run their schema's type checks on
# the raw JSON (handlers._validate_param_against_schema) and answer 400 with one message
# shape. Where those checks would refuse the value, the validator answers with that same
# message, so clients and tests matching MLflow's words keep working; it speaks for itself
# only where MLflow would answer 500 or carry on with a half-parsed request (a value dropped
# or altered, or a 400 that names another field), checked in tests/unit/server/test_validation.py
# against MLflow's own app.

_INTEGERS = frozenset(
    {
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT32,
        FieldDescriptor.CPPTYPE_UINT64,
    }
)
_FLOATS = frozenset({FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE})


def mlflows_message(document: dict[str, Any], request_type: Descriptor) -> str | None:
    """MLflow's message for the first top-level field its type checks would refuse."""
    for key, value in document.items():
        field = request_type.fields_by_name.get(key) or _by_json_name(request_type, key)
        if field is not None and value is not None:
            message = mlflows_type_message(field, value)
            if message is not None:
                return message
    return None


def _by_json_name(descriptor: Descriptor, key: str) -> FieldDescriptor | None:
    return next((f for f in descriptor.fields if f.json_name == key), None)


def mlflows_type_message(field: FieldDescriptor, value: Any) -> str | None:
    """What MLflow answers when its type check for ``field`` refuses ``value``; None when
    that check would pass it (or fail with a 500: a TypeError it does not catch)."""
    from mlflow.utils.validation import invalid_value

    if not _refused_by_mlflows_type_check(field, value):
        return None
    hint = f" Hint: Value was of type '{type(value).__name__}'."
    return (
        invalid_value(field.name, value, hint)
        + " See the API docs for more information about request parameters."
    )


def _refused_by_mlflows_type_check(field: FieldDescriptor, value: Any) -> bool:
    """handlers._assert_array / _assert_string / _assert_bool / _assert_intlike /
    _assert_floatlike, as MLflow 3.17 writes them."""
    if is_repeated(field):
        return not isinstance(value, list)
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_STRING:
        return not isinstance(value, str)
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return not isinstance(value, bool)
    convert = int if kind in _INTEGERS else float if kind in _FLOATS else None
    try:
        refused = convert is not None and not isinstance(convert(value), int | float)
    except ValueError:  # "abc": the conversion MLflow tries fails, its assertion then too
        refused = True
    except TypeError:  # a list or an object: MLflow's check raises this itself, a 500
        refused = False
    return refused


def _strings_named_path(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for key, value in document.items():
        if isinstance(value, str) and key.lower().endswith("path"):
            yield key, value


def _string_field(document: dict[str, Any], descriptor: Descriptor, name: str) -> str:
    field = descriptor.fields_by_name[name]
    value = document.get(field.name, document.get(field.json_name))
    return value if isinstance(value, str) else ""


def _check_storage_uris(document: dict[str, Any], request_type: Descriptor) -> None:
    if request_type.name == "CreateModelVersion":
        source = _string_field(document, request_type, "source")
        scheme = urlsplit(source).scheme.lower()
        if scheme not in VERSION_SOURCE_SCHEMES and source not in PROMPT_SOURCES:
            raise Refusal(
                403,
                "PERMISSION_DENIED",
                f"model version source {source!r} is not allowed: on this server a source is "
                "a runs:/, models:/ or mlflow-artifacts: URI, whose permissions are checked",
            )
    elif request_type.name == "CreateExperiment":
        location = _string_field(document, request_type, "artifact_location")
        if location and urlsplit(location).scheme.lower() != "mlflow-artifacts":
            raise Refusal(
                403,
                "PERMISSION_DENIED",
                f"artifact_location {location!r} is not allowed: on this server artifacts go "
                "through the server (leave it empty, or use an mlflow-artifacts: URI)",
            )


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return True
    media = content_type.split(b";")[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


class RequestValidator:
    """ASGI middleware: answer bad API input with 400 (or 403, 413) in MLflow's error format."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        try:
            check_path(path)
            arguments = query_arguments(scope.get("query_string", b""))
            if not path.startswith(API_PREFIXES):
                check_query(arguments, None)  # e.g. /get-artifact?path=...
                await self.app(scope, receive, send)
                return
            request_type = mlflow_routes().request_type(method, path)
            check_query(arguments, request_type)
            if method in ("POST", "PUT", "PATCH", "DELETE") and not ARTIFACT_UPLOADS.search(path):
                receive = await self._checked_body(scope, receive, request_type)
        except Refusal as refusal:
            log.info("refused %s %s: %s", method, path, refusal.message)
            await respond_error(send, refusal.status, refusal.error_code, refusal.message)
            return
        except ClientGoneError:
            return
        await self.app(scope, receive, send)

    async def _checked_body(
        self, scope: Scope, receive: Receive, request_type: Descriptor | None
    ) -> Receive:
        content_type = header(scope, b"content-type")
        if content_type is not None and content_type.lower().startswith(FORM_TYPES):
            return receive  # HTML forms (the sign-up page); MLflow parses no JSON from them
        try:
            body = await read_body(receive, MAX_JSON_BYTES)
        except BodyTooLargeError:
            raise Refusal(
                413,
                "INVALID_PARAMETER_VALUE",
                f"the request body is larger than {MAX_JSON_BYTES // 2**20} MiB",
            ) from None
        if body.strip():
            try:
                document = decode_json(body)
            except _ForbiddenConstantError as constant:
                raise _invalid(
                    f"the request body holds a bare {constant}: JSON has no such number; "
                    f'send the string "{constant}"'
                ) from None
            except RecursionError:
                raise _invalid("the request body is nested too deeply") from None
            except ValueError as error:  # not JSON (JSONDecodeError, UnicodeDecodeError)
                if _is_json(content_type):
                    raise _invalid(f"the request body is not valid JSON: {error}") from None
                document = None  # MLflow will not parse it either: nothing to check
            if document is not None or _is_json(content_type):
                check_body(document, request_type)
        return replay(body, receive)
