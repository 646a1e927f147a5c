"""The storage (OSS) side: signed, expiring result URLs and temporary file uploads.

Result images: ``{url}/results/{id}.png?Expires=...&OSSAccessKeyId=...&Signature=...``, no
Authorization needed, PNG with Content-Type image/png. After ``result_ttl`` seconds: 403
with an OSS XML body (AccessDenied "Request has expired."); a bad or missing signature:
403 SignatureDoesNotMatch / AccessDenied; no such id: 404 NoSuchKey.

Temporary uploads (cn-beijing only): ``GET {base}/uploads?action=getPolicy&model=M`` issues a
policy; a multipart POST to its upload_host ({url}/oss-upload) with the issued
OSSAccessKeyId, Signature and policy, a key under upload_dir and a file stores it for 48 h.
success_action_status 200/201 is answered as such, else 204; failures answer OSS XML (403
InvalidAccessKeyId / SignatureDoesNotMatch / AccessDenied, 400 InvalidArgument /
EntityTooLarge, 409 FileAlreadyExists). ``oss://{key}`` items resolve (with the header
X-DashScope-OssResourceResolve: enable) only for the account and model of the upload.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from . import rules
from .accounts import Key
from .errors import ApiError
from .http import Response, oss_error
from .state import Shared

RESULT_PATH = re.compile(r"/results/([0-9a-f]{32})\.png")
UPLOAD_PATH = "/oss-upload"
_MISMATCH = "The request signature we calculated does not match the signature you provided."


class Signer:
    """HMAC signatures with a secret made per emulator (result URLs and upload policies)."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(16)

    def sign(self, text: str) -> str:
        digest = hmac.new(self._secret, text.encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()


class Results:
    """Result images under signed URLs that expire after the settings' result_ttl."""

    def __init__(self, shared: Shared, signer: Signer, url: Callable[[], str]) -> None:
        self._shared, self._signer, self._url = shared, signer, url
        self._results: dict[str, dict[str, Any]] = {}

    def publish(self, png: bytes) -> str:
        """Store a result image and return its signed, expiring URL (call with the lock held)."""
        image_id = uuid.uuid4().hex
        expires_at = time.time() + self._shared.settings.result_ttl
        expires = str(math.ceil(expires_at))
        signature = self._signer.sign(f"{image_id}\n{expires}")
        url = (f"{self._url()}/results/{image_id}.png?Expires={expires}"
               f"&OSSAccessKeyId={rules.RESULT_ACCESS_KEY}&Signature={quote(signature, safe='')}")
        self._results[image_id] = {"png": png, "url": url, "expires_at": expires_at,
                                   "query": (expires, rules.RESULT_ACCESS_KEY, signature)}
        return url

    def served(self) -> dict[str, bytes]:
        with self._shared.lock:
            return {result["url"]: result["png"] for result in self._results.values()}

    def lookup(self, path: str, query: str) -> tuple[Response, bytes | None]:
        """(response, png): the answer OSS gives to a result download; png None on error."""
        match = RESULT_PATH.fullmatch(path)
        with self._shared.lock:
            result = self._results.get(match.group(1)) if match else None
        if result is None:
            return oss_error(404, "NoSuchKey", "The specified key does not exist."), None
        params = parse_qs(query)
        names = ("Expires", "OSSAccessKeyId", "Signature")
        given = tuple(params.get(name, [""])[0] for name in names)
        if not all(given):
            return oss_error(403, "AccessDenied",
                             "You have no right to access this object because of bucket acl."), None
        if time.time() > result["expires_at"]:
            return oss_error(403, "AccessDenied", "Request has expired.", Expires=given[0]), None
        if given != result["query"]:
            return oss_error(403, "SignatureDoesNotMatch", _MISMATCH), None
        return Response(200, result["png"], "image/png"), result["png"]

    def fetch_own_url(self, url: str, port: int) -> bytes:
        """What the service downloads: only the emulator's own result URLs are reachable."""
        parts = urlsplit(url)
        try:
            own = parts.port == port and (
                parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback)
        except (ValueError, TypeError):
            own = False
        if not own:
            raise ApiError("InvalidURL",
                           f"download failed: {url} is not reachable from the emulator.")
        response, png = self.lookup(parts.path, parts.query)
        if png is None:
            raise ApiError("InvalidURL", f"download failed: {url} answered HTTP {response.status}.")
        return png


class Storage:
    """Temporary file storage: upload policies, the upload form and oss:// resolution."""

    def __init__(self, shared: Shared, signer: Signer) -> None:
        self._shared, self._signer = shared, signer
        self._policies: dict[str, dict[str, Any]] = {}
        self._uploads: dict[str, dict[str, Any]] = {}

    def policy(self, key: Key, model: str, upload_host: str) -> dict[str, Any]:
        """The data of a getPolicy answer, valid POLICY_TTL seconds for *key*'s account and
        *model*."""
        now = time.time()
        upload_dir = (f"dashscope-instant/{key.key_id}/{datetime.now(rules.UTC8):%Y-%m-%d}/"
                      f"{uuid.uuid4().hex}")
        expiration = datetime.fromtimestamp(now + rules.POLICY_TTL, timezone.utc)
        document = {
            "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "conditions": [{"bucket": "dashscope-instant"}, ["starts-with", "$key", upload_dir],
                           ["content-length-range", 0, rules.UPLOAD_MAX_MB * 1024 * 1024]],
        }
        policy = base64.b64encode(json.dumps(document).encode()).decode()
        signature = self._signer.sign(policy)
        with self._shared.lock:
            self._policies[policy] = {"account": key.account, "model": model,
                                      "upload_dir": upload_dir, "signature": signature,
                                      "expires": now + rules.POLICY_TTL}
        return {
            "policy": policy, "signature": signature, "upload_dir": upload_dir,
            "upload_host": upload_host, "expire_in_seconds": rules.UPLOAD_TTL,
            "max_file_size_mb": rules.UPLOAD_MAX_MB, "capacity_limit_mb": rules.UPLOAD_CAPACITY_MB,
            "oss_access_key_id": rules.UPLOAD_ACCESS_KEY, "x_oss_object_acl": "private",
            "x_oss_forbid_overwrite": "true",
        }

    def upload(self, content_type: str, body: bytes) -> Response:
        """The upload host's answer to a multipart POST (the form the SDK sends)."""
        fields = multipart(body, content_type)
        if fields is None:
            return oss_error(400, "InvalidArgument", "The body must be multipart/form-data.")
        for name in ("OSSAccessKeyId", "Signature", "policy", "key", "file"):
            if name not in fields:
                return oss_error(400, "InvalidArgument", f"The form field {name} is missing.")
        text = {name: value.decode("utf-8", "replace") for name, value in fields.items()
                if name != "file"}
        with self._shared.lock:
            policy = self._policies.get(text["policy"])
        if policy is None or text["OSSAccessKeyId"] != rules.UPLOAD_ACCESS_KEY:
            return oss_error(403, "InvalidAccessKeyId",
                             "The OSS Access Key Id you provided does not exist.")
        if not hmac.compare_digest(text["Signature"], policy["signature"]):
            return oss_error(403, "SignatureDoesNotMatch", _MISMATCH)
        if time.time() > policy["expires"]:
            return oss_error(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
        key, upload_dir = text["key"], policy["upload_dir"]
        if not key.startswith(upload_dir + "/") or key == upload_dir + "/":
            return oss_error(403, "AccessDenied", "Invalid according to Policy: Policy Condition "
                             f'failed: ["starts-with", "$key", "{upload_dir}"]')
        if len(fields["file"]) > rules.UPLOAD_MAX_MB * 1024 * 1024:
            return oss_error(400, "EntityTooLarge",
                             "Your proposed upload exceeds the maximum allowed size.")
        with self._shared.lock:
            forbid = text.get("x-oss-forbid-overwrite", "false").lower() == "true"
            if forbid and key in self._uploads:
                return oss_error(409, "FileAlreadyExists",
                                 "The object you specified already exists.")
            self._uploads[key] = {"data": fields["file"], "account": policy["account"],
                                  "model": policy["model"],
                                  "expires": time.time() + rules.UPLOAD_TTL}
            self._shared.stats.add("uploads")
        status = text.get("success_action_status", "204")
        return Response(int(status) if status in ("200", "201") else 204, b"", "text/plain")

    def fetch(self, name: str, account: str, model: str) -> bytes:
        """An uploaded file, if this account uploaded it for this model and it has not
        expired."""
        with self._shared.lock:
            upload = self._uploads.get(name[len("oss://"):])
        if (upload is None or upload["account"] != account or upload["model"] != model
                or time.time() > upload["expires"]):
            raise ApiError("InvalidURL",
                           f"download failed: {name} is not a file of this account and model.")
        return upload["data"]

    def fetch_any(self, name: str) -> bytes:
        """An uploaded file whoever uploaded it (for inspection by tests)."""
        with self._shared.lock:
            upload = self._uploads.get(name[len("oss://"):])
        if upload is None:
            raise ApiError("InvalidURL", f"download failed: {name} was never uploaded.")
        return upload["data"]


def multipart(body: bytes, content_type: str) -> dict[str, bytes] | None:
    """Fields of a multipart/form-data body as {name: bytes}; None if it is not one."""
    mime, _, params = content_type.partition(";")
    pairs = (p.strip().partition("=") for p in params.split(";"))
    boundary = next((v.strip().strip('"') for k, _, v in pairs if k.lower() == "boundary"), None)
    if mime.strip().lower() != "multipart/form-data" or not boundary:
        return None
    fields = {}
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, sep, data = part.partition(b"\r\n\r\n")
        name = re.search(rb'(?:^|[;\s])name="([^"]*)"', head)
        if not sep or not name:
            return None
        value = data[:-2] if data.endswith(b"\r\n") else data
        fields[name.group(1).decode("utf-8", "replace")] = value
    return fields
