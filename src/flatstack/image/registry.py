"""Pull images from registries speaking the OCI distribution API.

Plain ``http.client`` over TLS (system CAs, ``SSL_CERT_FILE``, or ``ca_file``).
Plain http is used only for localhost / 127.0.0.1 / ::1 registries that do not
speak TLS, or with ``insecure`` (which also skips certificate checks). A 401 with
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` is answered by fetching
an anonymous token from the realm and retrying. Blobs stream straight into the
store, verified against their digest; the image is named only when all are stored.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import ssl
import urllib.parse
from collections.abc import Callable
from typing import Any

from flatstack.image import ImageError
from flatstack.image import reference as refs
from flatstack.image import store as st
from flatstack.image.platform import choose
from flatstack.image.progress import NullProgress, Progress

ACCEPT = ", ".join([st.OCI_INDEX, st.OCI_MANIFEST, st.DOCKER_LIST, st.DOCKER_MANIFEST])
_LOCAL = ("localhost", "127.0.0.1", "::1")
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')
_MAX_MANIFEST = 4 << 20


class _Response:
    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self.conn, self.resp = conn, resp
        self.status = resp.status

    def header(self, name: str) -> str:
        return self.resp.getheader(name) or ""

    def read(self, n: int = -1) -> bytes:
        return self.resp.read(n) if n >= 0 else self.resp.read()

    def close(self) -> None:
        self.resp.close()
        self.conn.close()

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """One registry host; remembers its scheme and bearer token."""

    def __init__(self, host: str, *, ca_file: str | None = None, insecure: bool = False,
                 timeout: float = 60.0) -> None:
        self.host = host
        self.insecure = insecure
        self.timeout = timeout
        self.token: str | None = None
        hostname = urllib.parse.urlsplit("//" + host).hostname or host
        self.local = hostname in _LOCAL
        if insecure:
            self.ctx = ssl._create_unverified_context()
        else:
            try:
                self.ctx = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as err:
                raise ImageError(f"--ca-file {ca_file}: cannot load CA: {err}") from None
        self.scheme: str | None = None

    # -- transport --------------------------------------------------------------

    def _connect(self, scheme: str, host: str) -> http.client.HTTPConnection:
        if scheme == "https":
            return http.client.HTTPSConnection(host, timeout=self.timeout, context=self.ctx)
        return http.client.HTTPConnection(host, timeout=self.timeout)

    def _send(self, url: str, headers: dict[str, str]) -> _Response:
        """GET ``url`` following redirects (auth dropped when the host changes)."""
        for _ in range(6):
            parts = urllib.parse.urlsplit(url)
            conn = self._connect(parts.scheme, parts.netloc)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            try:
                conn.request("GET", path or "/", headers=headers)
                resp = conn.getresponse()
            except ssl.SSLCertVerificationError as err:
                conn.close()
                raise ImageError(f"{parts.netloc}: TLS certificate not trusted: "
                                 f"{err.verify_message}; pass --ca-file or set "
                                 "SSL_CERT_FILE") from None
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                raise _Transport(parts.netloc, err) from None
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                location = urllib.parse.urljoin(url, resp.getheader("Location") or "")
                resp.close()
                conn.close()
                if urllib.parse.urlsplit(location).netloc != parts.netloc:
                    headers = {k: v for k, v in headers.items() if k != "Authorization"}
                url = location
                continue
            return _Response(conn, resp)
        raise ImageError(f"{url}: too many redirects")

    def _base(self) -> str:
        if self.scheme is None:
            self.scheme = "https"
            try:
                self._send(f"https://{self.host}/v2/", {}).close()
            except _Transport as err:
                plain = isinstance(err.err, (ssl.SSLError, ConnectionResetError,
                                             http.client.RemoteDisconnected))
                if not plain:
                    raise err.error() from None
                if not (self.local or self.insecure):
                    raise ImageError(f"{self.host}: TLS handshake failed ({err.err}); plain "
                                     "http is only used for localhost or with --insecure"
                                     ) from None
                self.scheme = "http"
        return f"{self.scheme}://{self.host}"

    def get(self, path: str, repo: str, accept: str | None = None) -> _Response:
        """GET ``/v2/...`` with token auth; raise on any non-2xx status."""
        url = self._base() + path
        for attempt in range(2):
            headers = {"User-Agent": "flatstack"}
            if accept:
                headers["Accept"] = accept
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            try:
                resp = self._send(url, headers)
            except _Transport as err:
                raise err.error() from None
            if resp.status == 401 and attempt == 0:
                challenge = resp.header("WWW-Authenticate")
                resp.close()
                self._authenticate(challenge, repo)
                continue
            if resp.status >= 300:
                body = resp.read(4096).decode("utf-8", "replace")
                resp.close()
                raise ImageError(f"{self.host}{path}: {resp.status} {_reason(body, resp)}")
            return resp
        raise ImageError(f"{self.host}{path}: unauthorized")

    def _authenticate(self, challenge: str, repo: str) -> None:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() != "bearer":
            raise ImageError(f"{self.host}: registry wants {scheme or 'unknown'} "
                             "authentication; only anonymous bearer tokens are supported")
        fields = dict(_CHALLENGE_RE.findall(params))
        realm = fields.get("realm")
        if not realm or urllib.parse.urlsplit(realm).scheme not in ("http", "https"):
            raise ImageError(f"{self.host}: bearer challenge without a usable realm")
        query = {"scope": fields.get("scope") or f"repository:{repo}:pull"}
        if fields.get("service"):
            query["service"] = fields["service"]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        try:
            resp = self._send(url, {"User-Agent": "flatstack"})
        except _Transport as err:
            raise err.error() from None
        with resp:
            body = resp.read(1 << 20)
            if resp.status != 200:
                raise ImageError(f"{self.host}: token request to {realm} failed: "
                                 f"{resp.status} {_reason(body.decode('utf-8', 'replace'), resp)}")
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise ImageError(f"{self.host}: token response from {realm} has no token")
        self.token = token


class _Transport(Exception):
    def __init__(self, host: str, err: Exception) -> None:
        super().__init__(str(err))
        self.host, self.err = host, err

    def error(self) -> ImageError:
        text = getattr(self.err, "strerror", None) or str(self.err) or type(self.err).__name__
        return ImageError(f"{self.host}: {text}")


def _reason(body: str, resp: _Response) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or resp.resp.reason
    except (ValueError, AttributeError):
        return resp.resp.reason


def pull(store: st.Store, text: str, *, platform: str | None = None,
         ca_file: str | None = None, insecure: bool = False,
         progress: Progress | None = None) -> str:
    """Pull ``text`` into ``store``; return the stored name."""
    ref = refs.parse(text)
    progress = progress or NullProgress()
    client = Client(ref.host, ca_file=ca_file, insecure=insecure)
    with store.writing():
        desc = _manifest(store, client, ref, ref.api_ref, platform, depth=0)
        manifest = store.read_json(desc["digest"])
        blobs = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
        for blob in blobs:
            _blob(store, client, ref, blob, progress)
        name = str(refs.Reference(ref.registry, ref.repository, ref.tag,
                                  None if ref.tag else ref.digest))
        store.tag(name, desc)
    return name


def _manifest(store: st.Store, client: Client, ref: refs.Reference, which: str,
              platform: str | None, depth: int) -> dict[str, Any]:
    path = f"/v2/{ref.repository}/manifests/{which}"
    with client.get(path, ref.repository, ACCEPT) as resp:
        data = resp.read(_MAX_MANIFEST + 1)
        media = resp.header("Content-Type").split(";")[0].strip()
        header_digest = resp.header("Docker-Content-Digest")
    if len(data) > _MAX_MANIFEST:
        raise ImageError(f"{ref}: manifest larger than {_MAX_MANIFEST} bytes")
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    expected = which if refs.is_digest(which) else (
        header_digest if refs.is_digest(header_digest) else actual)
    if actual != expected:
        raise ImageError(f"{ref}: manifest digest mismatch: expected {expected}, got {actual}")
    try:
        doc = json.loads(data)
    except ValueError as err:
        raise ImageError(f"{ref}: manifest is not valid JSON: {err}") from None
    media = doc.get("mediaType") or media
    if media in st.INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
        if depth > 0:
            raise ImageError(f"{ref}: nested image indexes are not supported")
        child = choose(doc.get("manifests") or [], platform, str(ref))
        store.write_bytes(data, actual, what=f"{ref}: index")
        return _manifest(store, client, ref, child["digest"], platform, depth + 1)
    if media not in st.MANIFEST_TYPES:
        raise ImageError(f"{ref}: unsupported manifest type {media or 'unknown'}")
    store.write_bytes(data, actual, what=f"{ref}: manifest")
    return {"mediaType": media, "digest": actual, "size": len(data)}


def _blob(store: st.Store, client: Client, ref: refs.Reference, desc: dict[str, Any],
          progress: Progress) -> None:
    digest = desc.get("digest", "")
    store.blob_path(digest)
    size = desc.get("size")
    key = digest.split(":", 1)[1][:12]
    if store.has_blob(digest):
        progress.start(key, f"{key} exists", size or 0)
        progress.done(key)
        return
    progress.start(key, f"{key} pulling", size or 0)
    advance: Callable[[int], None] = lambda n: progress.advance(key, n)  # noqa: E731
    with client.get(f"/v2/{ref.repository}/blobs/{digest}", ref.repository) as resp:
        store.write_blob(resp.resp, digest, size, on_bytes=advance, what=f"{ref}: blob")
    progress.done(key)
