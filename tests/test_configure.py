"""``hub configure``: pointing hubzarr at a bucket in one command, against a moto S3 server.

moto accepts any credentials, so the keys written here are arbitrary; the tests check where
they go (the AWS credentials file, never hubzarr's config file or any output) and that the
configured settings alone reach the bucket, through the CLI and the Python API.
"""

from __future__ import annotations

import configparser
import json
import os
import pickle
import stat
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import Backend
from servers import S3_REGION, Server, s3_client
from typer.testing import CliRunner, Result

import hubzarr
from hubzarr import cli
from hubzarr.cli import app
from hubzarr.config import (
    Settings,
    aws_credentials_path,
    config_path,
    load_settings,
    mask_key_id,
    resolve_storage_options,
    save_settings,
)
from hubzarr.errors import FormatError, InvalidArgumentError

KEY_ID = "AKIATESTKEYID1234567"
SECRET = "Hz/s3cret+access+KEY-never-shown-0123"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the AWS tools at temporary files and drop any AWS setting from the environment."""
    for var in list(os.environ):
        if var.startswith("AWS_") and var != "AWS_CA_BUNDLE":
            monkeypatch.delenv(var)
    aws = tmp_path / "aws"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws / "config"))
    return aws / "credentials"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str, code: int = 0, stdin: str | None = None) -> Result:
    result = runner.invoke(app, list(args), input=stdin)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert SECRET not in result.output
    return result


def configure_s3(
    runner: CliRunner, root: str, server: Server, *extra: str, code: int = 0
) -> Result:
    """Configure ``root`` on the moto server with the test keys, non-interactively."""
    return invoke(
        runner,
        "configure",
        "--root",
        root,
        "--endpoint-url",
        server.url,
        "--access-key-id",
        KEY_ID,
        "--secret-access-key",
        SECRET,
        "--no-input",
        *extra,
        code=code,
    )


def rows(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep and len(line) > 13 and line[12] == " " and not line.startswith(" "):
            found[key] = value.strip()
    return found


def bucket_exists(server: Server, bucket: str) -> bool:
    with s3_client(server.url) as client:
        return bucket in {b["Name"] for b in client.list_buckets()["Buckets"]}


def new_bucket() -> str:
    return f"test-{uuid.uuid4().hex[:20]}"


# -- one command to a bucket ---------------------------------------------------------------


def test_configure_a_bucket_then_show_then_demo(
    runner: CliRunner, s3_backend: Backend, aws_env: Path
) -> None:
    assert s3_backend.server is not None
    result = configure_s3(runner, s3_backend.root, s3_backend.server)
    lines = result.stdout.splitlines()
    assert lines[0] == f"wrote the access key of profile 'hubzarr' to {aws_env}"
    assert lines[1] == f"wrote {config_path()}"
    assert lines[-2] == f"checking {s3_backend.root} ..."
    assert lines[-1].startswith(f"check passed: wrote, read and deleted {s3_backend.root}/")
    assert result.stderr == ""

    # hubzarr's config holds no secret, only where to find it.
    text = config_path().read_text()
    assert SECRET not in text
    assert KEY_ID not in text
    assert json.loads(text) == {
        "root": s3_backend.root,
        "endpoint_url": s3_backend.server.url,
        "profile": "hubzarr",
    }
    # The keys are where the AWS tools look, readable by the user only.
    assert stat.S_IMODE(aws_env.stat().st_mode) == 0o600
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(aws_env)
    assert dict(parser["hubzarr"]) == {
        "aws_access_key_id": KEY_ID,
        "aws_secret_access_key": SECRET,
    }

    shown = invoke(runner, "configure", "--show")
    assert KEY_ID not in shown.output
    assert rows(shown.stdout) == {
        "config file": str(config_path()),
        "root": s3_backend.root,
        "namespace": "library",
        "endpoint": s3_backend.server.url,
        "region": "(not set)",
        "profile": "hubzarr",
        "anon": "no",
        "credentials": str(aws_env),
        "access key": "AKIA...4567",
        "secret key": "****",
        "cache": "off",  # the tests' HUBZARR_CACHE_SIZE=0
        "cache dir": str(hubzarr.config.resolve_cache().directory),
        "cache size": "0 B",
    }
    assert "checking" not in shown.stdout  # --show alone does not probe

    # Every command now reaches the bucket through the configured settings alone.
    demo = invoke(runner, "demo", "--samples", "2")
    assert demo.stdout.splitlines()[0] == f"hub root: {s3_backend.root}"
    assert invoke(runner, "ls").stdout.splitlines() == ["demo/bigarray", "demo/petabyte"]
    # ... and the data is really in that bucket (read with explicit options).
    assert s3_backend.hub().ls("demo/") == ["demo/bigarray", "demo/petabyte"]


def test_python_api_uses_the_configured_settings(runner: CliRunner, s3_backend: Backend) -> None:
    assert s3_backend.server is not None
    configure_s3(runner, s3_backend.root, s3_backend.server, "--region", S3_REGION, "--no-check")
    expected = {
        "profile": "hubzarr",
        "client_kwargs": {"endpoint_url": s3_backend.server.url, "region_name": S3_REGION},
    }
    hub = hubzarr.Hub()
    assert hub.root == s3_backend.root
    assert hub.storage_options == expected
    assert hubzarr.Hub(s3_backend.root).storage_options == expected
    assert hubzarr.HubStore(None, "alice/x")._storage_options == expected

    arr = hub.array((4, 3), name="alice/x", dtype="int16")
    arr[1] = [1, 2, 3]
    hubzarr.tag("alice/x", "v1")  # the module-level functions use the default hub
    assert np.array_equal(hubzarr.load("alice/x:v1")[1], [1, 2, 3])
    assert s3_backend.hub().ls() == ["alice/x"]

    # A pickled hub leaves the profile behind; the receiver resolves the settings again.
    assert pickle.loads(pickle.dumps(hubzarr.Hub())).storage_options == expected

    # Explicit options win over the configured ones.
    assert hubzarr.Hub(storage_options={"anon": True}).storage_options == {"anon": True}


def test_check_alone(runner: CliRunner, s3_backend: Backend) -> None:
    assert s3_backend.server is not None
    configure_s3(runner, s3_backend.root, s3_backend.server, "--no-check")
    result = invoke(runner, "configure", "--check")
    assert result.stdout.splitlines()[0] == f"checking {s3_backend.root} ..."
    assert result.stdout.splitlines()[1].startswith("check passed: ")
    # The probe object is gone.
    assert s3_backend.hub().ls() == []
    assert s3_backend.hub().storage.fs.find(s3_backend.root) == []


def test_no_check(runner: CliRunner, s3_backend: Backend) -> None:
    assert s3_backend.server is not None
    s3_backend.server.reset()
    result = configure_s3(runner, s3_backend.root, s3_backend.server, "--no-check")
    assert "checking" not in result.stdout
    assert s3_backend.server.requests == []


def test_missing_bucket_is_created_on_request(runner: CliRunner, s3_server: Server) -> None:
    bucket = new_bucket()
    root = f"s3://{bucket}/hub"
    # us-east-1 must be sent with no location constraint: AWS and moto refuse one naming it.
    result = configure_s3(runner, root, s3_server, "--region", "us-east-1", "--create-bucket")
    assert f"created the bucket {bucket!r}" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1].startswith("check passed: ")
    assert bucket_exists(s3_server, bucket)
    hubzarr.array((2,), name="alice/y")
    assert hubzarr.ls() == ["alice/y"]


def test_missing_bucket_without_create_bucket_fails(runner: CliRunner, s3_server: Server) -> None:
    bucket = new_bucket()
    root = f"s3://{bucket}/hub"
    result = configure_s3(runner, root, s3_server, code=1)
    assert result.stderr.startswith(f"error: the bucket {bucket!r} of the hub root {root} ")
    assert "--create-bucket" in result.stderr
    assert not bucket_exists(s3_server, bucket)
    # The settings are kept: the bucket can be made later.
    assert load_settings().root == root
    result = invoke(runner, "configure", "--check", "--create-bucket")
    assert f"created the bucket {bucket!r}" in result.stdout
    assert bucket_exists(s3_server, bucket)


def test_interactive_prompts_for_the_secret_and_the_bucket(
    runner: CliRunner, s3_server: Server, monkeypatch: pytest.MonkeyPatch, aws_env: Path
) -> None:
    monkeypatch.setattr(cli, "_stdin_is_tty", lambda: True)
    bucket = new_bucket()
    result = invoke(
        runner,
        "configure",
        "--root",
        f"s3://{bucket}/hub",
        "--endpoint-url",
        s3_server.url,
        "--access-key-id",
        KEY_ID,
        stdin=f"{SECRET}\ny\n",
    )
    assert "AWS secret access key:" in result.output
    assert f"the bucket {bucket!r} does not exist; create it? [y/N]: y" in result.output
    assert result.stdout.splitlines()[-1].startswith("check passed: ")
    assert SECRET in aws_env.read_text()


def test_interactive_asks_for_keys_of_a_new_s3_root(
    runner: CliRunner, s3_backend: Backend, monkeypatch: pytest.MonkeyPatch, aws_env: Path
) -> None:
    assert s3_backend.server is not None
    monkeypatch.setattr(cli, "_stdin_is_tty", lambda: True)
    args = ("configure", "--root", s3_backend.root, "--endpoint-url", s3_backend.server.url)
    result = invoke(runner, *args, stdin=f"{KEY_ID}\n{SECRET}\n")
    assert "AWS access key id (empty: use the environment or the default profile):" in (
        result.output
    )
    assert load_settings().profile == "hubzarr"
    assert KEY_ID in aws_env.read_text()
    # --no-input asks nothing, even in a terminal: the (missing) keys come from elsewhere.
    result = invoke(runner, *args, "--no-input", "--no-check")
    assert "AWS" not in result.output


def test_non_interactive_needs_both_keys(runner: CliRunner, s3_backend: Backend) -> None:
    root = s3_backend.root
    result = invoke(runner, "configure", "--root", root, "--access-key-id", KEY_ID, code=1)
    assert result.stderr == (
        "error: --secret-access-key is needed with --access-key-id (run interactively to be "
        "asked for it)\n"
    )
    result = invoke(runner, "configure", "--root", root, "--secret-access-key", SECRET, code=1)
    assert result.stderr == "error: --access-key-id is needed with --secret-access-key\n"
    assert not config_path().exists()
    assert not aws_credentials_path().exists()


# -- the credentials file ------------------------------------------------------------------


def test_credentials_file_keeps_other_profiles(
    runner: CliRunner, s3_backend: Backend, aws_env: Path
) -> None:
    assert s3_backend.server is not None
    aws_env.parent.mkdir()
    aws_env.write_text(
        "[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = default%secret\n\n"
        "[hubzarr]\naws_access_key_id = OLD\naws_secret_access_key = old\n"
        "aws_session_token = stale\n\n"
        "[Other]\nAWS_Access_Key_Id = OTHERKEY\nregion = eu-west-1\n"
    )
    aws_env.chmod(0o644)
    configure_s3(runner, s3_backend.root, s3_backend.server)
    assert stat.S_IMODE(aws_env.stat().st_mode) == 0o600
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(aws_env)
    assert {s: dict(parser[s]) for s in parser.sections()} == {
        "default": {"aws_access_key_id": "DEFAULTKEY", "aws_secret_access_key": "default%secret"},
        # The stale session token belonged to the old keys.
        "hubzarr": {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET},
        "Other": {"AWS_Access_Key_Id": "OTHERKEY", "region": "eu-west-1"},
    }
    assert sorted(p.name for p in aws_env.parent.iterdir()) == ["credentials"]


def test_keys_under_a_named_profile(runner: CliRunner, s3_backend: Backend, aws_env: Path) -> None:
    assert s3_backend.server is not None
    result = configure_s3(runner, s3_backend.root, s3_backend.server, "--profile", "work")
    assert f"wrote the access key of profile 'work' to {aws_env}" in result.stdout
    assert load_settings().profile == "work"
    assert "[work]" in aws_env.read_text()
    assert rows(invoke(runner, "configure", "--show").stdout)["profile"] == "work"


def test_credentials_folder_is_created_private(
    runner: CliRunner, s3_backend: Backend, aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without AWS_SHARED_CREDENTIALS_FILE: ~/.aws/credentials (HOME is a temporary folder).
    assert s3_backend.server is not None
    monkeypatch.delenv("AWS_SHARED_CREDENTIALS_FILE")
    configure_s3(runner, s3_backend.root, s3_backend.server)
    path = Path.home() / ".aws" / "credentials"
    assert aws_credentials_path() == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_malformed_credentials_file_is_not_quoted(
    runner: CliRunner, s3_backend: Backend, aws_env: Path
) -> None:
    assert s3_backend.server is not None
    aws_env.parent.mkdir()
    aws_env.write_text(f"aws_secret_access_key = {SECRET}\n[broken\n")
    result = configure_s3(runner, s3_backend.root, s3_backend.server, code=1)
    assert result.stderr.startswith(f"error: the AWS credentials file {aws_env} is not a valid")
    assert SECRET in aws_env.read_text()  # left as it was
    assert not config_path().exists()


# -- secrets never shown -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--root", "/a/folder"], "are for s3:// roots"),
        (["--root", "gs://bucket/hub"], "for a gs:// root give --token"),
        (["--root", "s3://bucket/hub", "--namespace", "Not Valid"], "invalid name"),
        (["--root", "s3://bucket/hub", "--profile", "bad profile"], "invalid AWS profile"),
        (["--root", "s3://bucket/hub", "--endpoint-url", "localhost:9000"], "http://"),
        (["--root", "s3://bucket/hub", "--anon"], "--anon uses no credentials"),
    ],
)
def test_refused_keys_write_nothing(runner: CliRunner, args: list[str], message: str) -> None:
    result = invoke(
        runner,
        "configure",
        *args,
        "--access-key-id",
        KEY_ID,
        "--secret-access-key",
        SECRET,
        "--no-input",
        code=1,
    )
    assert message in result.stderr
    assert result.stderr.startswith("error: ")
    assert not config_path().exists()
    assert not aws_credentials_path().exists()


def test_secret_is_masked_in_backend_errors(
    runner: CliRunner, s3_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should a backend ever quote the secret, the CLI masks it.
    def leaky(root: str, options: object) -> str:
        raise hubzarr.StorageError(f"signature mismatch for secret {SECRET}")

    monkeypatch.setattr("hubzarr.config.probe_root", leaky)
    result = configure_s3(runner, "s3://bucket/hub", s3_server, code=1)
    assert result.stderr == "error: signature mismatch for secret ****\n"


def test_mask_key_id() -> None:
    assert mask_key_id("AKIAIOSFODNN7EXAMPLE") == "AKIA...MPLE"
    assert mask_key_id("short") == "****"


# -- other settings ------------------------------------------------------------------------


def test_anon_and_clearing_settings(runner: CliRunner) -> None:
    root = "s3://public-bucket/data"
    args = ("--endpoint-url", "http://localhost:9000", "--region", "eu-west-1")
    invoke(runner, "configure", "--root", root, "--anon", *args, "--no-check")
    assert resolve_storage_options(root, None) == {
        "anon": True,
        "client_kwargs": {"endpoint_url": "http://localhost:9000", "region_name": "eu-west-1"},
    }
    assert rows(invoke(runner, "configure", "--show").stdout)["anon"] == "yes"
    # An empty value clears a setting; --no-anon turns anonymous access off.
    invoke(runner, "configure", "--endpoint-url", "", "--no-anon", "--no-check")
    assert load_settings() == Settings(root=root, region="eu-west-1", anon=False)
    assert resolve_storage_options(root, None) == {"client_kwargs": {"region_name": "eu-west-1"}}


def test_changing_the_kind_of_store_drops_its_connection_settings(
    runner: CliRunner, tmp_path: Path
) -> None:
    args = ("--endpoint-url", "http://x:1", "--profile", "p", "--no-check")
    invoke(runner, "configure", "--root", "s3://bkt/hub", *args)
    invoke(runner, "configure", "--root", "s3://other/hub", "--no-check")
    assert load_settings().endpoint_url == "http://x:1"  # same kind of store: kept
    # An AWS profile means nothing to GCS (where the profile is a key file), nor to a folder.
    invoke(runner, "configure", "--root", "gs://bkt/hub", "--no-check")
    assert load_settings() == Settings(root="gs://bkt/hub")
    invoke(runner, "configure", "--root", "s3://bkt/hub", *args)
    invoke(runner, "configure", "--root", str(tmp_path / "hub"))
    assert load_settings() == Settings(root=str(tmp_path / "hub"))
    # Settings given before the first root are kept.
    config_path().unlink()
    invoke(runner, "configure", "--endpoint-url", "http://x:1", "--no-check")
    invoke(runner, "configure", "--root", "s3://bkt/hub", "--no-check")
    assert load_settings() == Settings(root="s3://bkt/hub", endpoint_url="http://x:1")


def test_gcs_token_path(runner: CliRunner, tmp_path: Path) -> None:
    token = tmp_path / "key.json"
    token.write_text('{"type": "service_account"}')
    token.chmod(0o644)
    root = "gs://bucket/hub"
    result = invoke(runner, "configure", "--root", root, "--token", str(token), "--no-check")
    assert result.stderr == (
        f"warning: {token} is readable by other users; restrict it with 'chmod 600 {token}'\n"
    )
    assert json.loads(config_path().read_text()) == {"root": root, "profile": str(token)}
    assert resolve_storage_options(root, None) == {"token": str(token)}
    shown = rows(invoke(runner, "configure", "--show").stdout)
    assert shown["credentials"] == str(token)
    assert shown["access key"] == "(not used by gs:// roots)"

    token.chmod(0o600)
    args = ("--endpoint-url", "http://localhost:4443", "--region", "EU", "--no-check")
    result = invoke(runner, "configure", "--profile", str(token), *args)
    assert result.stderr == ""
    assert resolve_storage_options(root, None) == {
        "token": str(token),
        "endpoint_url": "http://localhost:4443",
        "default_location": "EU",
    }

    invoke(runner, "configure", "--token", "", "--no-check")
    assert load_settings().profile is None
    result = invoke(runner, "configure", "--token", str(tmp_path / "absent.json"), code=1)
    assert "cannot read the token file" in result.stderr
    result = invoke(runner, "configure", "--root", "s3://bkt/hub", "--token", str(token), code=1)
    assert "--token is for gs:// roots" in result.stderr


def test_check_a_local_root(runner: CliRunner, tmp_path: Path) -> None:
    root = tmp_path / "hub"
    invoke(runner, "configure", "--root", str(root))
    assert not root.exists()  # a local root is not probed unless asked
    result = invoke(runner, "configure", "--check")
    assert result.stdout.splitlines()[-1].startswith(
        f"check passed: wrote, read and deleted {root}/"
    )
    assert list(root.iterdir()) == []


def test_check_reports_an_unwritable_root(runner: CliRunner, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke(runner, "configure", "--root", str(blocker / "hub"), "--check", code=1)
    assert result.stderr.startswith("error: storage operation on '.hubzarr-probe-")


# -- resolve_storage_options ---------------------------------------------------------------


def test_resolve_storage_options_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    save_settings(Settings(root="s3://bucket/hub", endpoint_url="http://e:1", profile="p"))
    configured = {"profile": "p", "client_kwargs": {"endpoint_url": "http://e:1"}}
    assert resolve_storage_options("s3://bucket/hub", None) == configured
    assert resolve_storage_options("s3://bucket/other/prefix", None) == configured  # same bucket
    assert resolve_storage_options("s3a://bucket/hub", None) == configured
    assert resolve_storage_options("s3://elsewhere/hub", None) == {}
    assert resolve_storage_options("gs://bucket/hub", None) == {}
    assert resolve_storage_options("memory://bucket/hub", None) == {}
    explicit = {"key": "k"}
    assert resolve_storage_options("s3://bucket/hub", explicit) == explicit
    assert resolve_storage_options("s3://bucket/hub", explicit) is not explicit
    # An empty dict is no choice: what a pickled hub, its credentials dropped, passes on.
    assert resolve_storage_options("s3://bucket/hub", {}) == configured
    # The root named by HUBZARR_ROOT gets the settings, if of the same kind of store.
    monkeypatch.setenv("HUBZARR_ROOT", "s3://elsewhere/hub")
    assert resolve_storage_options("s3://elsewhere/hub", None) == configured
    assert hubzarr.Hub().storage_options == configured
    monkeypatch.setenv("HUBZARR_ROOT", "gs://elsewhere/hub")
    assert resolve_storage_options("gs://elsewhere/hub", None) == {}


def test_resolve_storage_options_reads_no_config_for_local_roots(tmp_path: Path) -> None:
    config_path().parent.mkdir(parents=True)
    config_path().write_text("{broken")
    assert resolve_storage_options(str(tmp_path), None) == {}
    assert resolve_storage_options("memory://x", None) == {}
    with pytest.raises(FormatError):
        resolve_storage_options("s3://bucket/hub", None)


def test_settings_file_refuses_secrets_and_bad_types() -> None:
    for data in ({"secret": SECRET}, {"anon": "yes"}, {"region": 1}):
        config_path().parent.mkdir(parents=True, exist_ok=True)
        config_path().write_text(json.dumps(data))
        with pytest.raises(FormatError, match="must be a JSON object"):
            load_settings()
    with pytest.raises(InvalidArgumentError, match="must not hold credentials"):
        save_settings(Settings(endpoint_url="https://user:pw@minio:9000"))
