"""The one region vocabulary: ids, display names, hosts, and what each region offers.

Hosts (Model Studio: "List model quotas" and "Configure the API key"): Beijing and Singapore
have the shared hosts the SDK has always used; Virginia and Hong Kong have shared hosts named on
the quota page; every region has workspace-dedicated hosts
``https://{WorkspaceId}.{region}.maas.aliyuncs.com``, the only ones for Frankfurt and Tokyo.
A key, its region and the host must match: keys of one region fail in another.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigurationError

SINGAPORE = "ap-southeast-1"
BEIJING = "cn-beijing"
VIRGINIA = "us-east-1"
FRANKFURT = "eu-central-1"
TOKYO = "ap-northeast-1"
HONG_KONG = "cn-hongkong"

REGION_ENV = "DASHSCOPE_API_REGION"
WORKSPACE_ENV = "DASHSCOPE_WORKSPACE_ID"
_WORKSPACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Region:
    id: str
    name: str
    shared_url: str | None  # None: only workspace-dedicated hosts serve this region
    temporary_storage: bool  # /uploads?action=getPolicy and oss:// inputs
    words: tuple[str, ...] = ()  # other spellings users type

    @property
    def label(self) -> str:
        """``Singapore (ap-southeast-1)``: how messages name the region."""
        return f"{self.name} ({self.id})"

    def workspace_url(self, workspace_id: str) -> str:
        return f"https://{workspace_id}.{self.id}.maas.aliyuncs.com/api/v1"


REGIONS: dict[str, Region] = {region.id: region for region in (
    Region(SINGAPORE, "Singapore", "https://dashscope-intl.aliyuncs.com/api/v1", False,
           ("singapore", "sg", "intl", "international", "dashscope-intl")),
    Region(BEIJING, "Beijing", "https://dashscope.aliyuncs.com/api/v1", True,
           ("beijing", "bj", "cn", "china", "mainland")),
    Region(VIRGINIA, "Virginia", "https://dashscope-us.aliyuncs.com/api/v1", False,
           ("virginia", "us", "us-virginia")),
    Region(FRANKFURT, "Frankfurt", None, False, ("frankfurt", "eu", "germany")),
    Region(TOKYO, "Tokyo", None, False, ("tokyo", "jp", "japan")),
    Region(HONG_KONG, "Hong Kong", "https://cn-hongkong.dashscope.aliyuncs.com/api/v1", False,
           ("hongkong", "hong-kong", "hk")),
)}
DEFAULT_REGION = SINGAPORE


def normalize_region(value: str) -> str:
    word = value.strip().lower().replace("_", "-")
    for region in REGIONS.values():
        if word == region.id or word in region.words:
            return region.id
    raise ConfigurationError(
        f"Unknown region {value!r}.",
        hint="Use one of " + ", ".join(r.label for r in REGIONS.values())
             + " (also 'intl', 'cn', ...), in DASHSCOPE_API_REGION or the node's region input.")


def region_name(region: str) -> str:
    found = REGIONS.get(region)
    return found.label if found else region


def region_env_suffix(region: str) -> str:
    """``ap-southeast-1`` -> ``AP_SOUTHEAST_1``: the suffix of region-specific variables."""
    return region.upper().replace("-", "_")


def other_region(region: str) -> str:
    """The region a refused key is tried in: Beijing and Singapore are each other's."""
    return SINGAPORE if region == BEIJING else BEIJING


def check_workspace_id(value: str) -> str:
    value = value.strip()
    if not _WORKSPACE_ID.match(value):
        raise ConfigurationError(
            f"{WORKSPACE_ENV} is {value!r}, not a workspace id.",
            hint="Copy the workspace id (letters, digits, '-') from the Model Studio console.")
    return value


def region_url(region: str, workspace_id: str | None) -> str:
    """The API base URL of ``region``: the workspace host when an id is given."""
    info = REGIONS[region]
    if workspace_id:
        return info.workspace_url(check_workspace_id(workspace_id))
    if info.shared_url is None:
        raise ConfigurationError(
            f"The {info.label} region has no shared API host: it is served only at "
            "workspace-dedicated hosts.",
            hint=f"Set {WORKSPACE_ENV} to your Model Studio workspace id (console: Workspace "
                 f"details), or DASHSCOPE_HTTP_BASE_URL_{region_env_suffix(region)} to the "
                 "full base URL.")
    return info.shared_url
