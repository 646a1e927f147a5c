"""DashScope's temporary storage: a local input is uploaded once and then named ``oss://...``.

Offered in the Beijing region only (``Region.temporary_storage``). For one request:

1. ``GET /uploads?action=getPolicy&model=M``: one policy for all the files of the request;
2. a multipart POST of each file to the policy's ``upload_host``, without the API key (the
   signed policy authorises it), as ``{upload_dir}/{sha256 of the content}.{ext}``;
3. the input becomes ``oss://{upload_dir}/{name}``; the client then sends the generation
   with ``X-DashScope-OssResourceResolve: enable``.

A file lives 48 hours and can be used only by the account and the model it was uploaded
for. The process state (``state.UploadCache``) therefore remembers, per (endpoint, key
fingerprint, model), the name of every content hash it uploaded, for ``REUSE_FOR`` (two hours
less than the file's life, a margin for a request that waits in the queue), and sends a
repeated image by that name
without uploading it again. The memory is shared by every client of the process and
thread-safe; two calls needing the same new image wait for one upload. It is not kept
across restarts: after one, an image is uploaded once more (uploads are free).
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

from ..catalog.specs import TEMPORARY_FILE_TTL
from ..config import key_fingerprint
from ..errors import CancelledError, ServerError
from ..images import inspect_image, mime_type
from ..state import UploadCache
from .transport import Transport

log = logging.getLogger(__name__)

REUSE_FOR = TEMPORARY_FILE_TTL - 2 * 3600  # seconds an uploaded file's name is reused
_POLICY_FIELDS = ("policy", "signature", "upload_dir", "upload_host", "oss_access_key_id")
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "TIFF": "tiff", "WEBP": "webp"}

@dataclass
class Uploads:
    names: list[str]  # one oss:// name per file, in order
    uploaded: int  # files sent now
    reused: int  # files already uploaded within REUSE_FOR


class TemporaryStorage:
    """Uploads through one client's transport (its key, endpoint and retry policy)."""

    def __init__(self, transport: Transport, cache: UploadCache):
        self.transport = transport
        self.cache = cache

    def oss_names(self, model: str, files: list[bytes],
                  cancel_event: threading.Event | None = None) -> Uploads:
        """The ``oss://`` name of each file for ``model``, uploading the ones not known yet."""
        config = self.transport.config
        account = (config.base_url, key_fingerprint(config.api_key()), model)
        policy = None
        result = Uploads([], 0, 0)
        for data in files:
            digest = hashlib.sha256(data).hexdigest()
            entry = account + (digest,)
            with self.cache.one_upload_at_a_time(entry):
                name = self.cache.known(entry)
                if name is None:
                    if cancel_event is not None and cancel_event.is_set():
                        raise CancelledError("Cancelled while uploading the input images; "
                                             "nothing was billed.")
                    policy = policy or self._policy(model, cancel_event)
                    started = time.monotonic()  # the file's life starts later than this
                    name = self._upload(policy, data, digest, cancel_event)
                    self.cache.remember(entry, name, started + REUSE_FOR)
                    result.uploaded += 1
                else:
                    result.reused += 1
            result.names.append(name)
        return result

    def _policy(self, model: str, cancel_event: threading.Event | None) -> dict:
        answer = self.transport.get("/uploads", params={"action": "getPolicy", "model": model},
                                    cancel_event=cancel_event)
        data = answer.get("data")
        if not isinstance(data, dict) or any(not data.get(f) for f in _POLICY_FIELDS):
            raise ServerError(200, "InvalidResponse",
                              f"the upload policy answer lacks {', '.join(_POLICY_FIELDS)}: "
                              f"{str(answer)[:200]}", answer.get("request_id"),
                              hint="Run again; if it persists, choose input_transport "
                                   "'data_uri' (the inputs are then shrunk to fit).")
        return data

    def _upload(self, policy: dict, data: bytes, digest: str,
                cancel_event: threading.Event | None) -> str:
        fmt = inspect_image(data)[0]
        mime = mime_type(fmt)
        name = f"{digest[:32]}.{_EXTENSIONS[fmt]}"
        key = f"{policy['upload_dir'].rstrip('/')}/{name}"
        fields = {
            "OSSAccessKeyId": policy["oss_access_key_id"],
            "Signature": policy["signature"],
            "policy": policy["policy"],
            "key": key,
            "x-oss-object-acl": policy.get("x_oss_object_acl") or "private",
            "x-oss-forbid-overwrite": policy.get("x_oss_forbid_overwrite") or "true",
            "success_action_status": "200",
            "x-oss-content-type": mime,
        }
        self.transport.post_upload(policy["upload_host"], fields, (name, data, mime),
                                   cancel_event=cancel_event)
        log.info("Uploaded an input image (%d bytes) to DashScope's temporary storage as "
                 "oss://%s", len(data), key)
        return f"oss://{key}"
