"""Where an artifact URI's objects are in the server's bucket, and which prefixes overlap."""

from __future__ import annotations

import pytest

from mlflow_stack.gc.locations import Destination, overlaps

BUCKET = Destination("mlflow")


@pytest.mark.parametrize(
    ("uri", "prefix"),
    [
        ("mlflow-artifacts:/3/abc/artifacts", "3/abc/artifacts/"),
        ("mlflow-artifacts:/3", "3/"),
        ("mlflow-artifacts://mlflow:5000/3/abc/artifacts", "3/abc/artifacts/"),
        ("mlflow-artifacts:/3/../../etc", "etc/"),  # '..' cannot climb out of the bucket
        ("s3://mlflow/7/run/artifacts", "7/run/artifacts/"),
        ("s3://other-bucket/7/run/artifacts", None),
        ("file:///tmp/mlruns/7", None),
        ("/tmp/mlruns/7", None),
        ("mlflow-artifacts:/", None),  # the whole bucket: never
        ("mlflow-artifacts:/..", None),
        ("s3://mlflow", None),
        ("", None),
        (None, None),
    ],
)
def test_artifact_uris_resolve_to_a_prefix_in_the_bucket_or_to_none(
    uri: str | None, prefix: str | None
) -> None:
    assert BUCKET.prefix_of(uri) == prefix


@pytest.mark.parametrize(
    ("uri", "prefix"),
    [
        ("s3a://mlflow/7/run/artifacts", "7/run/artifacts/"),
        ("s3://mlflow/7//run/./artifacts/", "7/run/artifacts/"),
        ("s3://mlflow/", None),
        ("gs://mlflow/7", None),
        ("mlflow-artifacts:/3/abc/artifacts?x=1", "3/abc/artifacts/"),
    ],
)
def test_bucket_uris_are_normalised_like_proxied_ones(uri: str, prefix: str | None) -> None:
    assert BUCKET.prefix_of(uri) == prefix


def test_a_destination_with_a_path_keeps_proxied_uris_under_it() -> None:
    destination = Destination.parse("s3://mlflow/artifacts")
    assert destination == Destination("mlflow", "artifacts/")
    assert destination.prefix_of("mlflow-artifacts:/3/r/artifacts") == "artifacts/3/r/artifacts/"
    assert destination.prefix_of("s3://mlflow/elsewhere/3") is None
    assert destination.prefix_of("mlflow-artifacts:/") is None
    with pytest.raises(ValueError, match="not an s3://bucket"):
        Destination.parse("file:///tmp")


def test_nothing_climbs_out_of_a_destinations_path() -> None:
    destination = Destination.parse("s3://mlflow/artifacts/")
    assert destination.prefix_of("mlflow-artifacts:/../secret") == "artifacts/secret/"
    assert destination.prefix_of("s3://mlflow/artifacts/../secret/3") is None
    assert destination.prefix_of("s3://mlflow/artifacts") is None  # the whole destination
    assert destination.prefix_of("s3://mlflow/artifactsX/3") is None  # a sibling, not below
    assert destination.prefix_of("s3://mlflow/artifacts/3/r") == "artifacts/3/r/"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("s3://mlflow", Destination("mlflow")), ("s3://mlflow/a/b/", Destination("mlflow", "a/b/"))],
)
def test_destinations_parse(uri: str, expected: Destination) -> None:
    assert Destination.parse(uri) == expected


@pytest.mark.parametrize("uri", ["s3:///path", "mlflow-artifacts:/", "mlflow", ""])
def test_a_destination_that_is_not_an_s3_bucket_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match=r"is not an s3://bucket\[/path\] URI"):
        Destination.parse(uri)


def test_prefixes_overlap_only_along_directories() -> None:
    assert overlaps("3/", "3/run/artifacts/")
    assert overlaps("shared/", "shared/")
    assert not overlaps("3/", "30/")
    assert not overlaps("3/", "3-sibling/")
