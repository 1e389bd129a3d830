"""Which security each client gets from the settings, and how unusable files are refused."""

from __future__ import annotations

import base64
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from config.connections import (
    faust_credentials,
    kafka_options,
    redacted,
    redis_options,
    stack_secrets,
)
from config.secret_files import SecretError
from config.settings import Settings, SettingsError
from streams.metrics_server import serve_metrics
from streams.preflight import _check

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a certificate with its key, as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["req", "-x509", *ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-subj", "/CN=ca"],
        ["req", *ec, "-keyout", "key.pem", "-out", "cert.csr", "-subj", "/CN=client"],
        [
            "x509",
            "-req",
            "-in",
            "cert.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-out",
            "cert.pem",
            "-CAcreateserial",
        ],
    ):
        if command[0] == "x509":
            command += ["-CAcreateserial", "-out", "cert.pem"]
        subprocess.run(["openssl", *command], cwd=folder, check=True, capture_output=True)
    (folder / "password").write_text("s3cret-password\n")
    (folder / "empty").write_text("\n")
    return folder


def test_plaintext_adds_nothing() -> None:
    assert kafka_options(Settings()) == {}
    assert redis_options(Settings(redis_port=6000)) == ("redis://127.0.0.1:6000/0", {})


def test_sasl_ssl_reads_the_password_from_its_file(pki: Path) -> None:
    options = kafka_options(
        Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="svc",
            kafka_sasl_password_file=str(pki / "password"),
            kafka_ssl_cafile=str(pki / "ca.pem"),
        )
    )
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "svc",
        "s3cret-password",
    )
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_tls_with_a_client_certificate(pki: Path) -> None:
    options = kafka_options(
        Settings(
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=str(pki / "ca.pem"),
            kafka_ssl_certfile=str(pki / "cert.pem"),
            kafka_ssl_keyfile=str(pki / "key.pem"),
        )
    )
    assert set(options) == {"security_protocol", "ssl_context"}
    # The wrong key for the certificate is refused at once, naming both settings.
    with pytest.raises(SecretError, match=r"SALESPULSE_KAFKA_SSL_CERTFILE=.*KEYFILE=.*ca-key"):
        kafka_options(
            Settings(
                kafka_security_protocol="SSL",
                kafka_ssl_certfile=str(pki / "cert.pem"),
                kafka_ssl_keyfile=str(pki / "ca-key.pem"),
            )
        )


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"kafka_sasl_password_file": "empty"}, "SALESPULSE_KAFKA_SASL_PASSWORD_FILE="),
        ({"kafka_sasl_password_file": "missing"}, "SALESPULSE_KAFKA_SASL_PASSWORD_FILE="),
        ({"kafka_ssl_cafile": "missing"}, "SALESPULSE_KAFKA_SSL_CAFILE=.*no such file"),
        ({"kafka_ssl_cafile": "password"}, "SALESPULSE_KAFKA_SSL_CAFILE=.*not a usable PEM"),
    ],
)
def test_an_unusable_kafka_file_names_its_setting(
    pki: Path, overrides: dict[str, str], named: str
) -> None:
    base = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_username": "svc",
        "kafka_sasl_password_file": str(pki / "password"),
    }
    settings = Settings(**base | {k: str(pki / v) for k, v in overrides.items()})  # type: ignore[arg-type]
    with pytest.raises(SecretError, match=named) as caught:
        kafka_options(settings)
    assert "s3cret" not in str(caught.value)


def test_redis_tls_and_acl_user(pki: Path) -> None:
    url, options = redis_options(
        Settings(
            redis_url="redis://cache.example:6380/2",
            redis_tls=True,
            redis_username="svc",
            redis_password_file=str(pki / "password"),
            redis_ssl_cafile=str(pki / "ca.pem"),
            redis_ssl_certfile=str(pki / "cert.pem"),
            redis_ssl_keyfile=str(pki / "key.pem"),
        )
    )
    assert url == "rediss://cache.example:6380/2"
    assert options["username"] == "svc" and options["password"] == "s3cret-password"
    assert options["ssl_cert_reqs"] == "required" and options["ssl_check_hostname"] is True
    assert options["ssl_certfile"] == str(pki / "cert.pem")
    with pytest.raises(SecretError, match=r"SALESPULSE_REDIS_PASSWORD_FILE=.*0 characters"):
        redis_options(Settings(redis_password_file=str(pki / "empty")))


def test_the_secure_stack_uses_its_own_secrets(pki: Path, tmp_path: Path) -> None:
    settings = Settings(
        stack_secure=True,
        stack_dir=str(tmp_path),
        redis_port=7000,
        kafka_security_protocol="PLAINTEXT",  # the stack's own security wins
    )
    with pytest.raises(SecretError, match=r"secrets/ca\.pem: no such file"):
        kafka_options(settings)  # `stack up --secure` has not made them yet
    folder = stack_secrets(settings)
    folder.folder.mkdir()
    for source, target in (
        ("ca.pem", folder.ca),
        ("password", folder.kafka_password),
        ("password", folder.redis_password),
        ("cert.pem", folder.client_cert),
        ("key.pem", folder.client_key),
    ):
        target.write_bytes((pki / source).read_bytes())
    options = kafka_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "salespulse"
    url, redis = redis_options(settings)
    assert url == "rediss://127.0.0.1:7000/0"
    assert redis["username"] == "salespulse" and redis["password"] == "s3cret-password"
    assert redis["ssl_ca_certs"] == str(folder.ca)
    assert redis["ssl_certfile"] == str(folder.client_cert)


def test_settings_that_cannot_go_together() -> None:
    with pytest.raises(SettingsError, match="SASL_SSL needs"):
        Settings.from_env({"SALESPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(SettingsError, match="use PLAINTEXT, SSL, SASL_SSL"):
        Settings.from_env({"SALESPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    with pytest.raises(SettingsError, match="go together"):
        Settings.from_env({"SALESPULSE_REDIS_TLS": "1", "SALESPULSE_REDIS_SSL_CERTFILE": "/c.pem"})
    with pytest.raises(SettingsError, match="MIN_INSYNC_REPLICAS=3"):
        Settings.from_env({"SALESPULSE_TOPIC_MIN_INSYNC_REPLICAS": "3"})


def test_a_password_in_a_url_is_never_shown() -> None:
    assert redacted("rediss://svc:p%40ss@cache:6380/0") == "rediss://svc:***@cache:6380/0"
    assert redacted("redis://:pw@cache/0") == "redis://:***@cache/0"
    assert redacted("redis://cache:6379/0") == "redis://cache:6379/0"
    assert redacted("redis://cache/0?password=pw&db=1") == "redis://cache/0?password=***&db=1"


def test_faust_gets_the_same_security(pki: Path) -> None:
    import faust

    assert faust_credentials(Settings()) is None
    sasl = faust_credentials(
        Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-256",
            kafka_sasl_username="svc",
            kafka_sasl_password_file=str(pki / "password"),
        )
    )
    assert isinstance(sasl, faust.SASLCredentials)
    assert (sasl.username, sasl.password) == ("svc", "s3cret-password")
    assert sasl.mechanism.value == "SCRAM-SHA-256" and sasl.protocol.value == "SASL_SSL"
    tls = faust_credentials(Settings(kafka_security_protocol="SSL"))
    assert isinstance(tls, faust.SSLCredentials)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SALESPULSE_KAFKA_SASL_USERNAME": "svc"}, "SALESPULSE_KAFKA_SASL_USERNAME is set but"),
        (
            {"SALESPULSE_KAFKA_SECURITY_PROTOCOL": "SSL", "SALESPULSE_KAFKA_SASL_USERNAME": "svc"},
            "PROTOCOL=SSL does not use it",
        ),
        ({"SALESPULSE_KAFKA_SSL_CAFILE": "/ca.pem"}, "SALESPULSE_KAFKA_SSL_CAFILE is set but"),
        ({"SALESPULSE_REDIS_PASSWORD_FILE": "/pw"}, "password in the clear"),
        ({"SALESPULSE_REDIS_SSL_CAFILE": "/ca.pem"}, "TLS is off"),
        (
            {"SALESPULSE_REDIS_URL": "rediss://cache/0?ssl_cert_reqs=none"},
            "drop the parameter 'ssl_cert_reqs'",
        ),
        ({"SALESPULSE_REDIS_URL": "rediss://cache/0?password=x"}, "drop the parameter 'password'"),
    ],
)
def test_security_that_would_not_be_used_is_refused(env: dict[str, str], named: str) -> None:
    """Configured but unused would mean a connection weaker than the operator asked for."""
    with pytest.raises(SettingsError, match=re.escape(named)):
        Settings.from_env(env)


def test_preflight_names_the_stacks_secrets_in_secure_stack_mode(tmp_path: Path) -> None:
    plain = _check(Settings(), "SALESPULSE_REDIS_SSL_CAFILE")
    assert plain == "SALESPULSE_REDIS_SSL_CAFILE"
    secure = _check(Settings(stack_secure=True, stack_dir=str(tmp_path)), "SALESPULSE_X")
    assert str(tmp_path / "secrets") in secure and "SALESPULSE_X" not in secure


def test_the_worker_metrics_need_the_token_when_one_is_set() -> None:
    server = serve_metrics("127.0.0.1", 0, "reader-token-0123456789")
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"]
        refused.value.close()
        basic = base64.b64encode(b"any:reader-token-0123456789").decode()
        for header in ("Bearer reader-token-0123456789", f"Basic {basic}"):
            request = urllib.request.Request(url, headers={"Authorization": header})
            with urllib.request.urlopen(request, timeout=5) as answer:
                assert answer.status == 200 and b"python_info" in answer.read()
    finally:
        server.shutdown()
        server.server_close()
    open_server = serve_metrics("127.0.0.1", 0, None)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{open_server.server_port}/metrics") as a:
            assert a.status == 200
    finally:
        open_server.shutdown()
        open_server.server_close()
