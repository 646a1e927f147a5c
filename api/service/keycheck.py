"""Which region a key belongs to: free probes, and the hint of an InvalidApiKey error.

A probe queries a random task id: a valid key gets ``200 UNKNOWN``, a key of another
region or an invalid key ``401 InvalidApiKey``; nothing is billed. After an InvalidApiKey
the paired region (Singapore <-> Beijing) is probed once per key and the answer kept in
the process state, so the error can say where the key belongs.
"""
from __future__ import annotations

import logging
import uuid

from ..catalog.regions import REGIONS, other_region, region_env_suffix, region_name
from ..config import Config, key_fingerprint
from ..errors import AuthenticationError, QwenImageError
from ..state import KeyProbes
from .retry import RetryPolicy
from .transport import Transport

log = logging.getLogger(__name__)

# The probe after an InvalidApiKey only improves a message: kept short.
_PROBE_RETRY = RetryPolicy(attempts=2, base=0.2, cap=1.0, total=10.0)


def key_accepted(transport: Transport, base_url: str, retry: RetryPolicy | None = None) -> bool:
    """Whether the configured key is accepted at ``base_url`` (a free task query)."""
    try:
        transport.get(f"/tasks/{uuid.uuid4()}", base_url=base_url, retry=retry)
    except AuthenticationError:
        return False
    return True


def explained(error: AuthenticationError, config: Config, transport: Transport,
              probes: KeyProbes) -> AuthenticationError:
    """``error`` with a hint that says whether the key works in the other region.

    Without a known endpoint for the other region, or when the probe fails, the general
    hint stays.
    """
    url = config.other_base_url
    if url is None:
        return error
    fingerprint = key_fingerprint(config.api_key())
    accepted = probes.get(fingerprint, url)
    if accepted is None:
        try:
            accepted = key_accepted(transport, url, _PROBE_RETRY)
        except QwenImageError as exc:
            log.info("Could not try the key in the other region: %s", exc)
            return error
        probes.put(fingerprint, url, accepted)
    here, there = config.region, other_region(config.region)
    if accepted:
        hint = (f"This key is not valid in {region_name(here)}, but this key is accepted by "
                f"the {REGIONS[there].name} region: set DASHSCOPE_API_REGION={there} or the "
                f"node's region to '{there} ({REGIONS[there].name})'. To use both regions, "
                f"put it in DASHSCOPE_API_KEY_{region_env_suffix(there)} and a "
                f"{REGIONS[here].name} key in DASHSCOPE_API_KEY_{region_env_suffix(here)}.")
    else:
        source = config.key_source
        hint = (f"The key {source.masked} (from {source.origin}) is not accepted in either "
                f"region: neither {region_name(here)} nor {region_name(there)} knows it. It "
                "may be mistyped, disabled or deleted: copy it again from the Model Studio "
                "console (API keys) of the region you use.")
    return AuthenticationError(error.status, error.code, error.message, error.request_id,
                               hint=hint)
