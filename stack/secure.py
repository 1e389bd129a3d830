"""`salespulse stack up --secure`: a local CA, certificates, users and passwords.

Written once under ``<stack_dir>/secrets`` (mode 0700, files 0600) and kept across restarts:

* ``ca.pem``: the CA the clients trust (``ca-key.pem`` signs, and never leaves the folder);
* ``server.pem``/``server-key.pem``: Kafka's and Redis' certificate, for 127.0.0.1 and
  localhost; ``broker.p12`` the same for the JVM, its password in ``keystore-password``;
* ``client.pem``/``client-key.pem``: the client certificate Redis requires;
* ``kafka-password``, ``kafka-admin-password``: the SCRAM-SHA-512 passwords of the
  ``salespulse`` user and of the broker's own ``admin`` user (inter-broker);
* ``redis-password``: the password of the Redis ACL user ``salespulse``; Redis' ``users.acl``
  holds only its SHA-256, and the ``default`` user is off.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from config.connections import STACK_USER, StackSecrets
from projections.errors import SalespulseError
from stack.install import require_binary

# Certificates the CA signs, with their keys: made again whenever the CA is.
ISSUED = ("server.pem", "server-key.pem", "client.pem", "client-key.pem")
ADMIN_USER = "admin"  # the broker's own SCRAM user, for inter-broker connections
DAYS = 825


class SecretsError(SalespulseError):
    """openssl failed to make a key or certificate."""


def ensure_secrets(folder: StackSecrets) -> None:
    """Create what is missing (the CA first: certificates are re-signed only when new)."""
    require_binary("openssl", "openssl")
    root = folder.folder
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    for name in ("kafka-password", "kafka-admin-password", "redis-password", "keystore-password"):
        if not (root / name).exists():
            _write_private(root / name, secrets.token_urlsafe(24) + "\n")
            if name == "keystore-password":  # the keystore it locked is of no use now
                (root / "broker.p12").unlink(missing_ok=True)
    if not (folder.ca.exists() and (root / "ca-key.pem").exists()):
        # A new CA: whatever the old one signed goes with it.
        for name in (*ISSUED, "broker.p12", "ca.srl"):
            (root / name).unlink(missing_ok=True)
        _openssl(
            root,
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", str(DAYS),
            "-subj", "/CN=salespulse local stack CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    _issue(root, "server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
           "extendedKeyUsage=serverAuth,clientAuth\n")  # fmt: skip
    _issue(root, "client", STACK_USER, "extendedKeyUsage=clientAuth\n")
    if not (root / "broker.p12").exists():
        _openssl(
            root,
            "pkcs12", "-export", "-in", "server.pem", "-inkey", "server-key.pem",
            "-certfile", "ca.pem", "-name", "kafka", "-out", "broker.p12",
            "-passout", "file:keystore-password",  # never on a command line (ps)
        )  # fmt: skip
    for path in root.iterdir():
        path.chmod(0o600)


def password(folder: StackSecrets, name: str) -> str:
    return (folder.folder / name).read_text().strip()


def kafka_security_properties(folder: StackSecrets, mtls: bool) -> str:
    """Lines for server.properties: SASL_SSL (SCRAM-SHA-512) for clients and between brokers;
    with ``mtls``, the MTLS listener requires a client certificate signed by the CA."""
    root = folder.folder
    admin = password(folder, "kafka-admin-password")
    store = password(folder, "keystore-password")
    return "\n".join(
        [
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN_USER}" password="{admin}";',
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={root / 'broker.p12'}",
            f"ssl.keystore.password={store}",
            f"ssl.key.password={store}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={folder.ca}",
            "ssl.endpoint.identification.algorithm=https",
            *(["listener.name.mtls.ssl.client.auth=required"] if mtls else []),
            "",
        ]
    )


def scram_users(folder: StackSecrets) -> list[str]:
    """``kafka-storage format`` arguments that create the SCRAM users with the storage."""
    return [
        arg
        for user, file in ((ADMIN_USER, "kafka-admin-password"), (STACK_USER, "kafka-password"))
        for arg in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={password(folder, file)}]")
    ]


def redis_acl(folder: StackSecrets) -> str:
    """users.acl: the default user off; ``salespulse`` with the SHA-256 of its password, every
    command but those Redis calls dangerous (KEYS, FLUSHALL, CONFIG, DEBUG, ...), except
    INFO, read-only, for the exporter's memory figures."""
    digest = hashlib.sha256(password(folder, "redis-password").encode()).hexdigest()
    return f"user default off\nuser {STACK_USER} on #{digest} ~* &* +@all -@dangerous +info\n"


def redis_tls_arguments(folder: StackSecrets, port: int, acl_file: Path) -> list[str]:
    root = folder.folder
    return [
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", str(root / "server.pem"),
        "--tls-key-file", str(root / "server-key.pem"),
        "--tls-ca-cert-file", str(folder.ca),
        "--tls-auth-clients", "yes",
        "--aclfile", str(acl_file),
    ]  # fmt: skip


def _issue(root: Path, name: str, common_name: str, extensions: str) -> None:
    if (root / f"{name}.pem").exists() and (root / f"{name}-key.pem").exists():
        return
    if name == "server":  # the JVM's copy of the server's key and certificate
        (root / "broker.p12").unlink(missing_ok=True)
    (root / f"{name}.ext").write_text(extensions)
    _openssl(
        root,
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={common_name}",
    )  # fmt: skip
    _openssl(
        root,
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", str(DAYS),
        "-extfile", f"{name}.ext",
    )  # fmt: skip
    (root / f"{name}.csr").unlink()
    (root / f"{name}.ext").unlink()


def _openssl(root: Path, *args: str) -> None:
    done = subprocess.run(
        [shutil.which("openssl") or "openssl", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SecretsError(f"openssl {args[0]} failed: {done.stderr.strip()[-300:]}")


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
