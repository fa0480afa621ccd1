"""Putting drivers into a test registry the way docs/oci-layout.md lays them out, independently of `publish`: the
manifest and config are written here from the spec's words, so a pull test does not depend on the publisher it
would share a bug with."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Optional

import requests

ARTIFACT_TYPE = "application/vnd.falco-driver-loader.driver.v1"
CONFIG_TYPE = "application/vnd.falco-driver-loader.driver.config.v1+json"
LAYER_TYPES = {"kmod": "application/vnd.falco-driver-loader.driver.kmod.v1",
               "ebpf": "application/vnd.falco-driver-loader.driver.ebpf.v1"}
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tag_for(name: str, version: str, arch: str, filename: str) -> str:
    """The layout's tag rule, as the spec writes it."""
    import re

    readable = re.sub(r"[^A-Za-z0-9._-]", "_", f"{version}_{arch}_{filename}")
    if not re.match(r"[A-Za-z0-9_]", readable):
        readable = "_" + readable
    suffix = hashlib.sha256(f"falco-driver-loader/oci/v1\n{name}\n{version}\n{arch}\n{filename}".encode())
    return readable[:107] + "-" + suffix.hexdigest()[:20]


class Pusher:
    """Plain requests against a test registry: anonymous, Basic, or Bearer from its token server."""

    def __init__(self, registry, repository: str) -> None:
        self.base = f"{registry.base_url}/v2/{repository}"
        self.repository = repository
        self.registry = registry
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would win over the test CA
        self.verify = registry.ca_pem or True
        self.headers = {}

    def _send(self, method: str, url: str, **kwargs):
        headers = kwargs.pop("headers", {})  # for the retry after a 401 too (an Accept header matters)
        for _ in range(2):
            answer = self.session.request(method, url, timeout=10, verify=self.verify,
                                          headers={**headers, **self.headers}, **kwargs)
            challenge = answer.headers.get("WWW-Authenticate", "")
            if answer.status_code != 401 or not self.registry.username:
                return answer
            if challenge.lower().startswith("bearer"):
                import re

                fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
                token = self.session.get(fields["realm"], timeout=10, verify=self.verify,
                                         params={"service": fields.get("service", ""),
                                                 "scope": f"repository:{self.repository}:pull,push"},
                                         auth=(self.registry.username, self.registry.password)).json()
                self.headers = {"Authorization": f"Bearer {token.get('token') or token['access_token']}"}
            else:
                self.session.auth = (self.registry.username, self.registry.password)
        return answer

    def blob(self, data: bytes) -> str:
        started = self._send("POST", f"{self.base}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["Location"]
        if location.startswith("/"):
            location = self.base.split("/v2/")[0] + location
        joiner = "&" if "?" in location else "?"
        done = self._send("PUT", f"{location}{joiner}digest={digest(data)}", data=data,
                          headers={"Content-Type": "application/octet-stream"})
        assert done.status_code == 201, done.text
        return digest(data)

    def manifest(self, reference: str, data: bytes) -> str:
        answer = self._send("PUT", f"{self.base}/manifests/{reference}", data=data,
                            headers={"Content-Type": MANIFEST_TYPE})
        assert answer.status_code == 201, answer.text
        return digest(data)


def driver_manifest(body: bytes, filename: str, *, kind: str = "kmod", config: Optional[dict] = None,
                    title: Optional[str] = None, layer_digest: Optional[str] = None, extra_layers=()) -> tuple:
    """(config bytes, manifest bytes) for a driver layer holding `body`."""
    config_doc = config if config is not None else {
        "layout": 1, "driverName": "falco", "driverVersion": "8.0.0+driver", "kind": kind, "arch": "x86_64",
        "target": "ubuntu-generic", "kernelRelease": "6.8.0-79-generic", "kernelVersion": "79",
        "apiVersion": "", "schemaVersion": "", "fileName": filename, "sha256": hashlib.sha256(body).hexdigest()}
    config_bytes = json.dumps(config_doc, sort_keys=True, separators=(",", ":")).encode()
    layers = [{"mediaType": LAYER_TYPES[kind], "digest": layer_digest or digest(body), "size": len(body),
               "annotations": {"org.opencontainers.image.title": title if title is not None else filename}}]
    layers += list(extra_layers)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "digest": digest(config_bytes), "size": len(config_bytes)},
                "layers": layers}
    return config_bytes, json.dumps(manifest, separators=(",", ":")).encode()


def push_driver(registry, repository: str, body: bytes, filename: str, *, tag: str, kind: str = "kmod",
                extra_blobs=(), **manifest_options) -> str:
    """Push a driver as the layout says (and `extra_blobs`, which a lying manifest may name); returns the manifest
    digest."""
    pusher = Pusher(registry, repository)
    config_bytes, manifest = driver_manifest(body, filename, kind=kind, **manifest_options)
    for blob in extra_blobs:
        pusher.blob(blob)
    pusher.blob(body)
    pusher.blob(config_bytes)
    return pusher.manifest(tag, manifest)


def sign_manifest(registry, repository: str, manifest_digest: str, key: Path, *,
                  vouched_digest: Optional[str] = None) -> None:
    """A cosign-shaped signature at `sha256-<hex>.sig`, made by the openssl command with `key`."""
    payload = json.dumps({"critical": {"identity": {"docker-reference": f"{registry.host}/{repository}"},
                                       "image": {"docker-manifest-digest": vouched_digest or manifest_digest},
                                       "type": "cosign container image signature"},
                          "optional": None}, separators=(",", ":")).encode()
    signature = base64.b64encode(subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=payload,
                                                capture_output=True, check=True, timeout=60).stdout).decode()
    pusher = Pusher(registry, repository)
    pusher.blob(payload)
    config = b'{"architecture":"","config":{},"os":"","rootfs":{"type":"layers","diff_ids":[]}}'
    pusher.blob(config)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config),
                           "size": len(config)},
                "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                            "digest": digest(payload), "size": len(payload),
                            "annotations": {"dev.cosignproject.cosign/signature": signature}}]}
    pusher.manifest("sha256-" + manifest_digest.split(":", 1)[1] + ".sig",
                    json.dumps(manifest, separators=(",", ":")).encode())


def make_key(directory: Path, name: str) -> Path:
    """An ECDSA P-256 key pair made by the openssl command; returns the private key (the public one is .pub)."""
    key = directory / f"{name}.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                    str(key)], check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(directory / f"{name}.pub")],
                   check=True, capture_output=True, timeout=60)
    return key
