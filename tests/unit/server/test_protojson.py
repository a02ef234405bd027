"""The fast JSON-against-protobuf check agrees with protobuf's own ParseDict, field by field,
over every request message the MLflow server accepts."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import ParseDict
from mlflow.protos.service_pb2 import LogBatch, LogMetric, SearchRuns

from mlflow_stack.server.protojson import ProtoJsonError, check_message

SCALARS: list[Any] = [
    "a", "", "12", " 1", "1.5", "2.0", "1e3", "0x10", "NaN", "nan", "Infinity", "-Infinity",
    "true", "false", "1e400", "QUJD", "not base64!", "\ud800",
    0, 1, -1, 7, 2**31, -(2**31) - 1, 2**32, 2**63, -(2**63) - 1, 2**64, 1.5, 2.0, -0.0,
    1e39, float("nan"), float("inf"), float("-inf"),
    True, False, None, [], {}, {"key": "k"},
]  # fmt: skip


def request_messages() -> list[type]:
    from mlflow.server import handlers

    found = {}
    for _, request_class, _ in handlers.get_endpoints(get_handler=lambda cls: cls):
        if isinstance(request_class, type):
            found[request_class.DESCRIPTOR.full_name] = request_class
    return sorted(found.values(), key=lambda cls: cls.DESCRIPTOR.full_name)


def parse_dict_accepts(value: Any, message_class: type) -> bool:
    try:
        ParseDict(value, message_class(), ignore_unknown_fields=True)
    except Exception:  # noqa: BLE001 - ParseError, and for some input TypeError, OverflowError,
        return False  # even SystemError from upb: MLflow answers those with a 500
    return True


def field_cases(descriptor: Descriptor) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for field in descriptor.fields:
        for value in SCALARS:
            cases.append({field.name: value})
            cases.append({field.name: [value]})
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            nested = field.message_type
            for sub in nested.fields[:8]:
                for value in SCALARS:
                    cases.append({field.json_name: {sub.name: value}})
                    cases.append({field.name: [{sub.json_name: value}]})
    return cases


#: Where the check is deliberately stricter than ParseDict, which reads a string or an array
#: given for a message as a list of unknown field names (an empty message), takes booleans and
#: fractions as enum numbers and wraps enum numbers beyond 32 bits.
STRICTER = ("must be a JSON object", "must be one of", "is not a value of")


@pytest.mark.parametrize("message_class", request_messages(), ids=lambda c: c.__name__)
def test_every_request_message_agrees_with_parse_dict(message_class: type) -> None:
    descriptor = message_class.DESCRIPTOR
    accepted_wrongly, refused_wrongly = [], []
    for case in field_cases(descriptor):
        protobuf_accepts = parse_dict_accepts(case, message_class)
        try:
            check_message(case, descriptor)
        except ProtoJsonError as error:
            if protobuf_accepts and not any(phrase in str(error) for phrase in STRICTER):
                refused_wrongly.append((case, str(error)))
        else:
            if not protobuf_accepts:
                accepted_wrongly.append(case)
    assert not accepted_wrongly, accepted_wrongly[:10]
    assert not refused_wrongly, refused_wrongly[:10]


def test_there_are_many_request_messages_to_compare() -> None:
    assert len(request_messages()) > 150


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"run_id": "r", "key": "k", "value": float("nan")}, 'send the string "NaN"'),
        ({"run_id": "r", "key": "k", "value": float("inf")}, '"Infinity"'),
        ({"run_id": "r", "key": "k", "value": 1.0, "step": 2**70}, "out of range"),
        ({"run_id": "r", "key": "k", "value": 1.0, "timestamp": 2**63}, "out of range"),
        ({"run_id": 31, "key": "k", "value": 1.0}, "run_id must be a string, not a number"),
        ({"run_id": "r", "runId": "s", "key": "k", "value": 1.0}, "twice"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_refusals_name_the_field_and_the_problem(body: Any, reason: str) -> None:
    with pytest.raises(ProtoJsonError, match=reason):
        check_message(body, LogMetric.DESCRIPTOR)


def test_what_the_mlflow_client_sends_is_accepted() -> None:
    check_message(
        {"run_id": "r", "key": "k", "value": "NaN", "timestamp": "1700000000000", "step": "3"},
        LogMetric.DESCRIPTOR,
    )
    metrics = [{"key": f"m{i}", "value": 0.5, "timestamp": 1, "step": i} for i in range(1000)]
    batch = {"run_id": "r", "metrics": metrics, "params": [], "tags": []}
    check_message(batch, LogBatch.DESCRIPTOR)
    check_message({"experiment_ids": ["1"], "max_results": 100}, SearchRuns.DESCRIPTOR)


def test_nested_errors_say_where() -> None:
    metrics = [{"key": "ok", "value": 1, "timestamp": 1}, {"key": "x", "value": [], "timestamp": 1}]
    with pytest.raises(ProtoJsonError, match=r"metrics\[1\]\.value must be a number"):
        check_message({"run_id": "r", "metrics": metrics}, LogBatch.DESCRIPTOR)
