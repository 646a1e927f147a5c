"""How edit inputs travel: as data URIs, through the temporary storage, or re-encoded to fit.

Inputs stay encoded bytes until the body is built, once. The body's size is known
beforehand without building it: the JSON of the body with empty image values plus the
length of each data URI (base64 needs no JSON escaping). While that stays within
``REQUEST_BODY_TARGET`` the inputs ride as data URIs. Beyond it they go through DashScope's
temporary storage where the region has it (Beijing, ``uploads``), and are otherwise
re-encoded to share the body (lossless first, then downscaled), with a note and a log line
saying what was done; ``input_transport`` forces either way. URL and ``oss://`` inputs are
sent as given.
"""
from __future__ import annotations

import base64
import logging

from ..catalog.regions import Region
from ..catalog.specs import INPUT_TRANSPORTS, REQUEST_BODY_TARGET
from ..errors import ApiError, AuthenticationError, TransportError, ValidationError
from ..images import data_uri_length, inspect_image, mime_type, shrink_to_fit, to_data_uri
from ..service.transport import Transport
from ..service.uploads import REUSE_FOR, TemporaryStorage
from ..state import UploadCache
from .waiting import Job

log = logging.getLogger(__name__)

AUTO, DATA_URI, UPLOAD = INPUT_TRANSPORTS


def check_transport(input_transport: str, region: Region) -> None:
    """Refuse an ``input_transport`` that is not a choice or not offered in ``region``."""
    if input_transport not in INPUT_TRANSPORTS:
        raise ValidationError("input_transport", f"{input_transport!r} is not a choice",
                              allowed=list(INPUT_TRANSPORTS))
    if input_transport == UPLOAD and not region.temporary_storage:
        raise ValidationError(
            "input_transport", f"'upload' needs DashScope's temporary file storage, which "
                               f"the {region.label} region does not offer (Beijing only)",
            allowed=[AUTO, DATA_URI],
            hint=f"Choose 'auto' (large inputs are then shrunk to fit in {region.name}) or use "
                 "the Beijing region (DASHSCOPE_API_REGION=cn-beijing or the node's region), "
                 "which needs a Beijing key.")


def local_bytes(image) -> bytes | None:
    """The encoded bytes of an input given as bytes or a data URI; None for a URL/oss name."""
    if isinstance(image, str):
        return base64.b64decode(image.split(",", 1)[1]) if image.startswith("data:") else None
    return bytes(image)


def _uri_length(data: bytes) -> int:
    return data_uri_length(len(data), mime_type(inspect_image(data)[0]))


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


class InputPlanner:
    """Decides, per edit call, the value each input is sent as."""

    def __init__(self, transport: Transport, region: Region, uploads: UploadCache):
        self.transport = transport
        self.region = region
        self.uploads = uploads

    def values(self, job: Job, overhead: int) -> list[str]:
        """The image values of a body whose other parts take ``overhead`` bytes."""
        images = job.request.images
        datas = [local_bytes(image) for image in images]
        local = [i for i, data in enumerate(datas) if data is not None]
        lengths = [_uri_length(d) if d is not None else len(images[i])
                   for i, d in enumerate(datas)]
        size = overhead + sum(lengths)
        mode = job.input_transport
        if not local or (mode != UPLOAD and size <= REQUEST_BODY_TARGET):
            return [to_data_uri(d) if d is not None else images[i] for i, d in enumerate(datas)]
        over = (f"as data URIs the request body would be {_mib(size)}, over the "
                f"{_mib(REQUEST_BODY_TARGET)} the pack sends")
        room = REQUEST_BODY_TARGET - (size - sum(lengths[i] for i in local))
        if mode == DATA_URI:
            return self._shrunk(job, datas, local, lengths, room,
                                f"input_transport is 'data_uri' and {over}")
        if mode == AUTO and not self.region.temporary_storage:
            return self._shrunk(
                job, datas, local, lengths, room,
                f"{over}, and {self.region.name} has no temporary file storage for large "
                "inputs (DashScope offers it in Beijing only)")
        job.emit("preparing", f"uploading {len(local)} input image(s)")
        try:
            uploads = TemporaryStorage(self.transport, self.uploads).oss_names(
                job.spec.id, [datas[i] for i in local], job.abandon_event)
        except (ApiError, TransportError) as exc:
            if mode == UPLOAD or isinstance(exc, AuthenticationError):
                raise
            log.warning("The temporary upload failed (%s); shrinking the inputs instead", exc)
            return self._shrunk(job, datas, local, lengths, room,
                                f"{over}, and the temporary upload failed ({exc})")
        values = [images[i] if d is None else "" for i, d in enumerate(datas)]
        for index, name in zip(local, uploads.names, strict=True):
            values[index] = name
        why = "input_transport is 'upload'" if mode == UPLOAD else over
        job.notes.append(
            f"{len(local)} input image(s) sent through DashScope's temporary storage as "
            f"oss:// names ({uploads.uploaded} uploaded now, {uploads.reused} uploaded within "
            f"the last {REUSE_FOR // 3600} h and reused), because {why}")
        log.info(job.notes[-1])
        return values

    def _shrunk(self, job: Job, datas: list[bytes | None], local: list[int],
                lengths: list[int], room: int, why: str) -> list[str]:
        """Re-encode the local inputs so that the body fits, smallest first.

        Each gets an equal share of the ``room`` left; one already within its share is kept,
        and what it leaves unused goes to the larger ones.
        """
        job.emit("preparing", f"re-encoding {len(local)} input image(s) to fit")
        values = [job.request.images[i] if d is None else "" for i, d in enumerate(datas)]
        changed = []
        for count, index in enumerate(sorted(local, key=lambda i: lengths[i])):
            share = room // (len(local) - count)
            try:
                data, done = shrink_to_fit(datas[index], share)
            except ValueError as exc:
                raise ValidationError(
                    f"image {index + 1}", f"cannot be sent within the request body limit: {exc}",
                    hint="Send fewer or smaller images, pass them as http(s) URLs, or use the "
                         "Beijing region, which uploads large inputs instead.") from None
            values[index] = to_data_uri(data)
            if done:
                changed.append((index, f"image {index + 1} {done}"))
            room -= len(values[index])
        job.notes.append(f"the input images were re-encoded to fit, because {why}: "
                         + "; ".join(text for _, text in sorted(changed)))
        log.warning("Qwen-Image edit: %s", job.notes[-1])
        return values

