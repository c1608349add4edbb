"""Makes the webhook's certificates once, in the cluster, and keeps them.

Run by the chart's hook Job (webhook.tls.source `generate`) before every
install and upgrade, in the exporter's image, with the Job's ServiceAccount
token. `helm template` (Argo CD, Flux) renders only this Job and its inputs,
which do not change between renders; the key material is made here, in the
cluster, and never appears in a rendered manifest.

    python certgen.py SPEC.json [--api-url URL]

SPEC names the three Secrets and what the certificates must say:

- `<fullname>-ca` (kubernetes.io/tls): a CA made on the first run and kept
  until it nears its end (`renewBeforeDays`). Never mounted by the pods.
- `<fullname>-tls` (kubernetes.io/tls): the serving certificate (server auth
  only) for `dnsNames` and `ipAddresses`, and `ca.crt`, which verifies the API
  server's client certificate. Made anew when the names or addresses change,
  when the CA changed, or when it nears its end.
- `<fullname>-apiserver` (Opaque): the API server's client certificate
  (client auth only), its key, `ca.crt` and `webhook.kubeconfig` for
  `--audit-webhook-config-file`. The client certificate is kept as long as
  the CA is: a change of the Service's addresses re-signs only the serving
  certificate, and the kubeconfig copied to the control-plane nodes stays
  valid (unless `server` changed, which the kubeconfig names).

Every decision is printed (the Job's log); nothing secret is. Exit 1 on any
API error: the Job retries and the install or upgrade fails visibly.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KEEP = {"helm.sh/resource-policy": "keep", "kube-audit-exporter/made-by": "certgen"}


class APIError(Exception):
    """The API server refused a request."""


class API:
    """GET and write of Secrets in one namespace, with the stdlib only."""

    def __init__(self, base: str, namespace: str) -> None:
        self.base = base.rstrip("/")
        self.namespace = namespace
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self.context: ssl.SSLContext | None = None
        token = SA_DIR / "token"
        if token.exists():
            self.headers["Authorization"] = f"Bearer {token.read_text().strip()}"
        if self.base.startswith("https:"):
            self.context = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any] | None:
        url = f"{self.base}/api/v1/namespaces/{self.namespace}/secrets{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.context) as resp:
                result: dict[str, Any] = json.load(resp)
                return result
        except urllib.error.HTTPError as e:
            if e.code == 404 and method == "GET":
                return None
            detail = e.read().decode(errors="replace")[:500]
            raise APIError(f"{method} secrets{path}: HTTP {e.code}: {detail}") from None

    def get(self, name: str) -> dict[str, Any] | None:
        return self._call("GET", f"/{name}")

    def create(self, obj: dict[str, Any]) -> None:
        self._call("POST", "", obj)

    def replace(self, obj: dict[str, Any]) -> None:
        self._call("PUT", f"/{obj['metadata']['name']}", obj)


@dataclass
class Pair:
    """A certificate and its key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _load(secret: dict[str, Any] | None, cert_key: str, key_key: str) -> Pair | None:
    data = (secret or {}).get("data") or {}
    try:
        cert = x509.load_pem_x509_certificate(base64.b64decode(data[cert_key]))
        key = serialization.load_pem_private_key(base64.b64decode(data[key_key]), None)
    except (KeyError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        return None
    return Pair(cert, key)


def _issue(
    subject: str,
    days: int,
    usages: list[x509.ObjectIdentifier] | None,
    sans: list[x509.GeneralName],
    ca: Pair | None,
) -> Pair:
    """A certificate: a self-signed CA when `ca` is None, else a leaf for
    exactly `usages` signed by `ca`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.cert.subject if ca else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages or []), False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
    cert = builder.sign(ca.key if ca else key, hashes.SHA256())
    return Pair(cert, key)


def _sans(spec: dict[str, Any]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in spec["dnsNames"]]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in spec["ipAddresses"]]
    return names


def _why_not_kept(
    pair: Pair | None, ca: Pair, renew: datetime.timedelta, sans: list[x509.GeneralName] | None
) -> str:
    """Why a leaf certificate must be made anew; empty when it can stay."""
    if pair is None:
        return "missing"
    if pair.cert.issuer != ca.cert.subject:
        return "signed by another CA"
    try:
        pair.cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return "signed by another CA"
    if pair.cert.not_valid_after_utc - _now() < renew:
        return f"expires {pair.cert.not_valid_after_utc:%Y-%m-%d}"
    if sans is not None:
        try:
            have = pair.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return "names or addresses changed"
        if set(have) != set(sans):
            return "names or addresses changed"
    return ""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _write(
    api: API, old: dict[str, Any] | None, name: str, kind: str, data: dict[str, bytes],
    spec: dict[str, Any],
) -> bool:  # fmt: skip
    """Create or replace a Secret when its data differ; True when written."""
    encoded = {k: _b64(v) for k, v in data.items()}
    annotations = dict(KEEP)
    if old is not None:
        have = old.get("metadata", {}).get("annotations") or {}
        if old.get("data") == encoded and all(have.get(k) == v for k, v in KEEP.items()):
            return False
        annotations = {**have, **KEEP}
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": kind,
        "metadata": {
            "name": name,
            "namespace": api.namespace,
            "labels": spec.get("labels", {}),
            "annotations": annotations,
        },
        "data": encoded,
    }
    if old is None:
        api.create(obj)
    else:
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        labels = old["metadata"].get("labels") or {}
        obj["metadata"]["labels"] = {**labels, **obj["metadata"]["labels"]}
        api.replace(obj)
    return True


def kubeconfig(server: str, ca: Pair, client: Pair | None) -> bytes:
    """The API server's webhook kubeconfig, everything embedded."""
    user: dict[str, str] = {}
    if client is not None:
        user = {
            "client-certificate-data": _b64(client.cert_pem()),
            "client-key-data": _b64(client.key_pem()),
        }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kube-audit-exporter",
                      "cluster": {"server": server,
                                  "certificate-authority-data": _b64(ca.cert_pem())}}],
        "users": [{"name": "kube-apiserver", "user": user}],
        "contexts": [{"name": "default",
                      "context": {"cluster": "kube-audit-exporter", "user": "kube-apiserver"}}],
        "current-context": "default",
    }  # fmt: skip
    return yaml.safe_dump(config, sort_keys=True).encode()


def run(spec: dict[str, Any], api: API) -> list[str]:
    """Bring the three Secrets to what `spec` asks; returns what was done."""
    done: list[str] = []
    days = int(spec["validityDays"])
    renew = datetime.timedelta(days=int(spec["renewBeforeDays"]))
    names = spec["secrets"]

    old_ca = api.get(names["ca"])
    ca = _load(old_ca, "tls.crt", "tls.key")
    if ca is None or ca.cert.not_valid_after_utc - _now() < renew:
        reason = "missing" if ca is None else f"expires {ca.cert.not_valid_after_utc:%Y-%m-%d}"
        ca = _issue(spec["caName"], days, None, [], None)
        done.append(f"CA {names['ca']}: made ({reason})")
    data = {"tls.crt": ca.cert_pem(), "tls.key": ca.key_pem()}
    _write(api, old_ca, names["ca"], "kubernetes.io/tls", data, spec)

    old_tls = api.get(names["serving"])
    sans = _sans(spec)
    serving = _load(old_tls, "tls.crt", "tls.key")
    reason = _why_not_kept(serving, ca, renew, sans)
    if reason or serving is None:
        serving = _issue(spec["commonName"], days, [ExtendedKeyUsageOID.SERVER_AUTH], sans, ca)
        done.append(f"serving certificate {names['serving']}: made ({reason})")
    data = {"tls.crt": serving.cert_pem(), "tls.key": serving.key_pem(), "ca.crt": ca.cert_pem()}
    _write(api, old_tls, names["serving"], "kubernetes.io/tls", data, spec)

    old_api = api.get(names["apiServer"])
    client = _load(old_api, "client.crt", "client.key")
    reason = _why_not_kept(client, ca, renew, None)
    if reason or client is None:
        client = _issue(
            "kube-apiserver", days, [ExtendedKeyUsageOID.CLIENT_AUTH],
            [x509.DNSName("kube-apiserver")], ca,
        )  # fmt: skip
        done.append(f"client certificate in {names['apiServer']}: made ({reason})")
    data = {
        "ca.crt": ca.cert_pem(),
        "client.crt": client.cert_pem(),
        "client.key": client.key_pem(),
        "webhook.kubeconfig": kubeconfig(
            spec["server"], ca, client if spec["clientAuth"] else None
        ),
    }
    if _write(api, old_api, names["apiServer"], "Opaque", data, spec) and old_api is not None:
        done.append(
            f"kubeconfig in {names['apiServer']} changed: copy it to the control-plane "
            "nodes again (see the chart's NOTES)"
        )
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--api-url", default="")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec.read_text())
    url = args.api_url
    if not url:
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        if ":" in host:
            host = f"[{host}]"
        url = f"https://{host}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"
    try:
        done = run(spec, API(url, spec["namespace"]))
    except (APIError, OSError) as e:
        print(f"certgen: {e}", file=sys.stderr)
        return 1
    for line in done or ["every certificate kept"]:
        print(f"certgen: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
