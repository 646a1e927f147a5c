"""One machine, two accounts: each region uses its own key, and a wrong key says where it works.

Both regions are one emulator: DASHSCOPE_HTTP_BASE_URL_<REGION> points each at its prefix.
"""
import hashlib
import os

import pytest

from qwen_image_dashscope.api import (
    AuthenticationError,
    Config,
    ImageEditRequest,
    QwenImageClient,
    TextToImageRequest,
)
from qwen_image_dashscope.api.catalog.regions import REGIONS, region_env_suffix
from qwen_image_dashscope.api.cli.commands import main
from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY
from support.client import ASYNC_PATH, BJ, FAST_RETRY, SG, png_bytes

UNKNOWN_KEY = "sk-nobody-knows-this-key-7f3a"
OTHER_REGIONS = [r for r, info in REGIONS.items() if r not in (SG, BJ) and info.shared_url]


def key_id(key: str) -> str:
    """How the emulator records a request's key (sha256 of the bearer token, 8 hex digits)."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


@pytest.fixture
def environ(emu, tmp_path, monkeypatch):
    """Both regions' URLs on the emulator, no key yet, no key file, nothing of the machine.

    The other regions with a shared host (Virginia, Hong Kong) point at paths the emulator
    does not serve (404), so that ``doctor``, which checks every region, never tries the
    real service (it would wait out the retries of an unreachable host)."""
    for name in [n for n in os.environ if n.startswith(("DASHSCOPE_", "QWEN_"))]:
        monkeypatch.delenv(name)
    values = {"HOME": str(tmp_path),
              "DASHSCOPE_HTTP_BASE_URL_AP_SOUTHEAST_1": emu.base_url(SG),
              "DASHSCOPE_HTTP_BASE_URL_CN_BEIJING": emu.base_url(BJ)}
    for region in OTHER_REGIONS:
        values[f"DASHSCOPE_HTTP_BASE_URL_{region_env_suffix(region)}"] = \
            f"{emu.url}/{region}/api/v1"
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def client_for(region, environ, **keys):
    return QwenImageClient(Config.resolve(region, environ={**environ, **keys}),
                           retry=FAST_RETRY)


def probes(emulator):
    return [r for r in emulator.requests if r.method == "GET" and "/tasks/" in r.path]


def test_each_region_uses_its_own_key(emu, environ):
    keys = dict(DASHSCOPE_API_KEY=UNKNOWN_KEY,  # the general key loses to both region keys
                DASHSCOPE_API_KEY_AP_SOUTHEAST_1=SINGAPORE_KEY,
                DASHSCOPE_API_KEY_CN_BEIJING=BEIJING_KEY)
    with client_for(SG, environ, **keys) as singapore, client_for(BJ, environ, **keys) as beijing:
        assert singapore.config.key_source.origin == "DASHSCOPE_API_KEY_AP_SOUTHEAST_1"
        assert beijing.config.key_source.origin == "DASHSCOPE_API_KEY_CN_BEIJING"
        assert singapore.config.other_base_url == emu.base_url(BJ)
        singapore.text_to_image(TextToImageRequest("a harbour"), interface="sync")
        beijing.text_to_image(TextToImageRequest("a hutong"), interface="sync")
        beijing.edit_image(ImageEditRequest("make it snow", images=(png_bytes(),)))
    used = {(r.region, r.key_id) for r in emu.requests if r.region is not None}
    assert used == {(SG, key_id(SINGAPORE_KEY)), (BJ, key_id(BEIJING_KEY))}
    assert all(r.status == 200 for r in emu.requests if r.region is not None)


def test_a_beijing_key_used_in_singapore_says_it_works_in_beijing(emu, environ):
    with client_for(SG, environ, DASHSCOPE_API_KEY=BEIJING_KEY) as client:
        with pytest.raises(AuthenticationError) as caught:
            client.text_to_image(TextToImageRequest("a kite"))
        with pytest.raises(AuthenticationError) as again:
            client.edit_image(ImageEditRequest("make it red", images=(png_bytes(),)))
    message = str(caught.value)
    assert "DashScope InvalidApiKey: Invalid API-key provided. (HTTP 401" in message
    assert ("this key is accepted by the Beijing region: set DASHSCOPE_API_REGION=cn-beijing "
            "or the node's region to 'cn-beijing (Beijing)'") in message
    assert "DASHSCOPE_API_KEY_CN_BEIJING" in message and BEIJING_KEY not in message
    assert "accepted by the Beijing region" in str(again.value)
    # One free probe in Beijing with this key, kept for the second error; nothing billed.
    (probe,) = [r for r in probes(emu) if r.region == BJ]
    assert probe.key_id == key_id(BEIJING_KEY) and probe.status == 200
    assert emu.stats["images_billed"] == 0 and emu.stats["tasks_created"] == 0


def test_a_singapore_key_used_in_beijing_says_it_works_in_singapore(emu, environ):
    with client_for(BJ, environ, DASHSCOPE_API_KEY_CN_BEIJING=SINGAPORE_KEY) as client:
        with pytest.raises(AuthenticationError) as caught:
            client.edit_image(ImageEditRequest("make it red", images=(png_bytes(),)))
    assert ("this key is accepted by the Singapore region: set "
            "DASHSCOPE_API_REGION=ap-southeast-1") in str(caught.value)


def test_an_unknown_key_is_not_accepted_in_either_region(emu, environ):
    with client_for(SG, environ, DASHSCOPE_API_KEY=UNKNOWN_KEY) as client:
        with pytest.raises(AuthenticationError) as caught:
            client.text_to_image(TextToImageRequest("a kite"))
        with pytest.raises(AuthenticationError):
            client.create_task(TextToImageRequest("a kite"))
    message = str(caught.value)
    assert "is not accepted in either region" in message
    assert "Singapore (ap-southeast-1)" in message and "Beijing (cn-beijing)" in message
    assert "sk-…7f3a (from DASHSCOPE_API_KEY)" in message and UNKNOWN_KEY not in message
    assert [(r.region, r.status) for r in probes(emu)] == [(BJ, 401)]  # probed once
    assert len([r for r in emu.requests if ASYNC_PATH in r.path]) == 2


def test_without_a_known_url_for_the_other_region_nothing_is_probed(emu, tmp_path):
    # One URL for both regions (a proxy, the emulator): the regions cannot be told apart.
    config = Config.resolve(SG, environ={"HOME": str(tmp_path),
                                         "DASHSCOPE_HTTP_BASE_URL": emu.base_url(SG),
                                         "DASHSCOPE_API_KEY": BEIJING_KEY})
    assert config.other_base_url is None
    with QwenImageClient(config, retry=FAST_RETRY) as client:
        with pytest.raises(AuthenticationError) as caught:
            client.text_to_image(TextToImageRequest("a kite"))
    assert "`qwen-image doctor` tells which region a key belongs to" in str(caught.value)
    assert probes(emu) == []


def test_other_region_urls(tmp_path):
    home = {"HOME": str(tmp_path)}
    assert Config.resolve(SG, environ=home).other_base_url == "https://dashscope.aliyuncs.com/api/v1"
    assert Config.resolve(BJ, environ=home).other_base_url == \
        "https://dashscope-intl.aliyuncs.com/api/v1"
    argument = Config.resolve(SG, base_url="http://127.0.0.1:9/api/v1", environ=home)
    assert argument.other_base_url is None  # unknown: never the real service by accident
    with_bj = Config.resolve(SG, base_url="http://127.0.0.1:9/api/v1", environ={
        **home, "DASHSCOPE_HTTP_BASE_URL_CN_BEIJING": "http://127.0.0.1:9/bj/api/v1"})
    assert with_bj.other_base_url == "http://127.0.0.1:9/bj/api/v1"


def test_doctor_shows_which_key_serves_which_region(emu, environ, monkeypatch, capsys):
    monkeypatch.setenv("DASHSCOPE_API_KEY_AP_SOUTHEAST_1", SINGAPORE_KEY)
    monkeypatch.setenv("DASHSCOPE_API_KEY_CN_BEIJING", BEIJING_KEY)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "default region  ap-southeast-1 (Singapore)" in out
    assert f"Singapore  URL  {emu.base_url(SG)}  [DASHSCOPE_HTTP_BASE_URL_AP_SOUTHEAST_1]" in out
    assert f"Beijing    URL  {emu.base_url(BJ)}  [DASHSCOPE_HTTP_BASE_URL_CN_BEIJING]" in out
    assert "Singapore  key  sk-…pore  [DASHSCOPE_API_KEY_AP_SOUTHEAST_1]  accepted\n" in out
    assert "Beijing    key  sk-…jing  [DASHSCOPE_API_KEY_CN_BEIJING]  accepted\n" in out
    assert "Beijing    large edit inputs  uploaded to temporary storage" in out
    assert "Singapore  large edit inputs  re-encoded to fit (no temporary storage here)" in out
    assert {(r.region, r.key_id, r.status) for r in probes(emu)} == {
        (SG, key_id(SINGAPORE_KEY), 200), (BJ, key_id(BEIJING_KEY), 200)}
    assert emu.stats["images_billed"] == 0


def test_doctor_tells_a_key_of_the_other_region(emu, environ, monkeypatch, capsys):
    monkeypatch.setenv("DASHSCOPE_API_KEY", BEIJING_KEY)
    assert main(["doctor"]) == 1  # the default region (Singapore) has no working key
    out = capsys.readouterr().out
    assert ("Singapore  key  sk-…jing  [DASHSCOPE_API_KEY]  rejected (InvalidApiKey): it is a "
            "Beijing key") in out
    assert "Beijing    key  sk-…jing  [DASHSCOPE_API_KEY]  accepted" in out
    # Every region with a shared host was checked here, none at the real service.
    assert {r.path.split("/")[1] for r in probes(emu)} == {SG, BJ, *OTHER_REGIONS}
    assert main(["doctor", "--region", "cn-beijing"]) == 0
