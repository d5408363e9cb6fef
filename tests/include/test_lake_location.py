"""Where the lake lives: URI validation, the S3 connection's resolution, secrets kept out of messages."""

from __future__ import annotations

import json

import pytest

from include.etl.lake.location import (
    LakeConfigError,
    LakeLocation,
    check_lake,
    connection_from_airflow,
    normalize_uri,
)

SECRET = "Sup3r-s3cret-never-shown"
CONN = {"conn_type": "aws", "login": "AKIDLAKE", "password": SECRET,
        "extra": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"}}


@pytest.mark.parametrize(("value", "message"), [
    ("", "ETL_LAKE_URI is empty"),
    ("  ", "ETL_LAKE_URI is empty"),
    ("gs://bucket/lake", "unsupported scheme 'gs'"),
    ("s3a://bucket/lake", "unsupported scheme 's3a'"),
    (f"s3://AKIDLAKE:{SECRET}@bucket/lake", "no keys or endpoint in it"),
    ("s3://bucket:9000/lake", "no keys or endpoint in it"),
    ("s3:///lake", "s3://bucket/prefix"),
    ("file://relative/lake", "file:///absolute/path"),
    ("file://./lake", "file:///absolute/path"),
])
def test_invalid_uris_are_refused_naming_the_setting(value, message):
    with pytest.raises(LakeConfigError, match=message) as err:
        normalize_uri(value)
    assert str(err.value).startswith("ETL_LAKE_URI")
    assert SECRET not in str(err.value) and "AKIDLAKE" not in str(err.value)


def test_keys_in_a_uri_of_any_scheme_are_not_echoed():
    with pytest.raises(LakeConfigError) as err:
        normalize_uri(f"gs://key:{SECRET}@bucket/lake", "MY_SETTING")
    assert "MY_SETTING='gs://***@bucket/lake'" in str(err.value) and SECRET not in str(err.value)


def test_valid_uris_are_normalized(tmp_path):
    assert normalize_uri("s3://bucket/a/b/") == "s3://bucket/a/b"
    assert normalize_uri("s3://bucket") == "s3://bucket"
    assert normalize_uri(tmp_path) == f"file://{tmp_path}"
    assert normalize_uri(f"{tmp_path}/x/") == f"file://{tmp_path}/x"
    assert normalize_uri(f"file://{tmp_path}/a/../b") == f"file://{tmp_path}/b"
    assert normalize_uri(f"file://localhost{tmp_path}") == f"file://{tmp_path}"


def test_s3_options_come_from_the_connection_variable_and_stay_out_of_repr():
    loc = LakeLocation.resolve("s3://bucket/lake/", "my_lake", env={"AIRFLOW_CONN_MY_LAKE": json.dumps(CONN)})
    assert loc.uri == "s3://bucket/lake" and loc.conn_id == "my_lake"
    assert dict(loc.storage_options) == {
        "conditional_put": "etag", "AWS_ACCESS_KEY_ID": "AKIDLAKE", "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ALLOW_HTTP": "true", "AWS_REGION": "eu-west-1"}
    assert SECRET not in repr(loc) and SECRET not in str(loc)
    assert loc.fs_path(loc.join("demo", "t")) == "bucket/lake/demo/t"


def test_extra_given_as_a_json_string():
    conn = {**CONN, "extra": json.dumps(CONN["extra"])}
    loc = LakeLocation.resolve("s3://bucket/lake", env={"AIRFLOW_CONN_LAKE_DEFAULT": json.dumps(conn)})
    assert loc.storage_options["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"


def test_a_connection_variable_that_is_not_json_is_refused_without_echoing_it():
    with pytest.raises(LakeConfigError, match="AIRFLOW_CONN_LAKE_DEFAULT is not JSON") as err:
        LakeLocation.resolve("s3://bucket/lake", env={"AIRFLOW_CONN_LAKE_DEFAULT": f"aws://AKID:{SECRET}@"})
    assert SECRET not in str(err.value)


def test_an_s3_lake_without_any_connection_says_how_to_give_one():
    with pytest.raises(LakeConfigError) as err:
        LakeLocation.resolve("s3://bucket/lake", "my_lake", env={})
    message = str(err.value)
    for part in ("s3://bucket/lake", "'my_lake'", "ETL_LAKE_CONN_ID", "AIRFLOW_CONN_MY_LAKE=", '"conn_type": "aws"',
                 "AWS_ACCESS_KEY_ID"):
        assert part in message


def test_the_standard_aws_variables_serve_when_there_is_no_connection():
    env = {"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": "tok",
           "AWS_ENDPOINT_URL": "https://s3.example.test", "AWS_REGION": "ap-south-1"}
    loc = LakeLocation.resolve("s3://bucket/lake", env=env)
    assert dict(loc.storage_options) == {
        "conditional_put": "etag", "AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": "tok", "AWS_ENDPOINT_URL": "https://s3.example.test", "AWS_REGION": "ap-south-1"}
    # The connection, when there is one, wins over the AWS variables.
    loc = LakeLocation.resolve("s3://bucket/lake", env={**env, "AIRFLOW_CONN_LAKE_DEFAULT": json.dumps(CONN)})
    assert loc.storage_options["AWS_ACCESS_KEY_ID"] == "AKIDLAKE" and "AWS_SESSION_TOKEN" not in loc.storage_options
    # Keys are needed: an endpoint alone is not a connection.
    with pytest.raises(LakeConfigError, match="not defined"):
        LakeLocation.resolve("s3://bucket/lake", env={"AWS_ENDPOINT_URL": "https://s3.example.test"})


def test_a_local_lake_needs_no_connection(tmp_path):
    loc = LakeLocation.resolve(tmp_path / "lake", "my_lake", env={})
    assert loc.is_local and loc.local_path == tmp_path / "lake" and dict(loc.storage_options) == {}


@pytest.fixture
def airflow_task(monkeypatch):
    """This process as a task runner: its supervisor answers ``GetConnection`` from the returned dict."""
    from airflow.sdk.exceptions import ErrorType
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.comms import ConnectionResult, ErrorResponse, GetConnection

    known: dict[str, dict] = {}

    class Supervisor:
        def send(self, msg):
            if isinstance(msg, GetConnection):
                if msg.conn_id in known:
                    return ConnectionResult(**{"conn_id": msg.conn_id, "host": None, "schema": None, "port": None,
                                               **known[msg.conn_id]})
                return ErrorResponse(error=ErrorType.CONNECTION_NOT_FOUND, detail={"conn_id": msg.conn_id})
            return None  # log masking and the like

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", Supervisor(), raising=False)
    return known


def test_outside_a_task_airflow_is_not_asked():
    assert connection_from_airflow("lake_default") is None


def test_inside_a_task_the_connection_comes_from_airflow(airflow_task):
    airflow_task["my_lake"] = {"conn_type": "aws", "login": "AKIDAF", "password": SECRET,
                               "extra": json.dumps({"endpoint_url": "http://127.0.0.1:7000"})}
    loc = LakeLocation.resolve("s3://bucket/lake", "my_lake", env={})
    assert loc.storage_options["AWS_ACCESS_KEY_ID"] == "AKIDAF"
    assert loc.storage_options["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert loc.storage_options["AWS_ENDPOINT_URL"] == "http://127.0.0.1:7000"
    assert loc.storage_options["AWS_REGION"] == "us-east-1"
    # The environment's variable wins over Airflow's lookup.
    loc = LakeLocation.resolve("s3://bucket/lake", "my_lake", env={"AIRFLOW_CONN_MY_LAKE": json.dumps(CONN)})
    assert loc.storage_options["AWS_ACCESS_KEY_ID"] == "AKIDLAKE"


def test_inside_a_task_an_unknown_connection_falls_back_quietly(airflow_task):
    assert connection_from_airflow("nope") is None
    loc = LakeLocation.resolve("s3://bucket/lake", "nope",
                               env={"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": SECRET})
    assert loc.storage_options["AWS_ACCESS_KEY_ID"] == "AKIDENV"
    with pytest.raises(LakeConfigError, match="'nope'"):
        LakeLocation.resolve("s3://bucket/lake", "nope", env={})


def test_check_lake_creates_and_writes_a_local_lake(tmp_path):
    root = tmp_path / "deep" / "lake"
    check_lake(LakeLocation.resolve(root))
    assert root.is_dir() and list(root.iterdir()) == []  # the marker file is gone
    check_lake(f"file://{root}")  # a URI is resolved too


def test_check_lake_refuses_a_local_lake_that_cannot_be_a_directory(tmp_path):
    (tmp_path / "taken").write_text("a file where the lake should be")
    with pytest.raises(LakeConfigError, match=f"the lake file://{tmp_path}/taken/lake cannot be created or written"):
        check_lake(LakeLocation.resolve(tmp_path / "taken" / "lake"))
