"""Where the key, region and base URL come from, and that the key never leaks."""
import logging

import pytest

from qwen_image_dashscope.api import (
    AuthenticationError,
    Config,
    ConfigurationError,
    MissingApiKeyError,
    QwenImageClient,
    TextToImageRequest,
    ValidationError,
)
from qwen_image_dashscope.api.emulator import BEIJING_KEY, SINGAPORE_KEY
from support.client import BJ, FAST_RETRY, SG, roomy_rate


@pytest.fixture
def home(tmp_path):
    """An empty home directory, so no real ~/.dashscope/api_key is ever read."""
    return tmp_path


def resolve(home, region=None, **environ):
    return Config.resolve(region, environ={"HOME": str(home), **environ})


def test_key_order(home):
    key_file = home / "key.txt"
    key_file.write_text("  sk-from-file-path-0001\n", encoding="utf-8")
    (home / ".dashscope").mkdir()
    (home / ".dashscope" / "api_key").write_text("sk-from-home-file-0002\n", encoding="utf-8")

    config = resolve(home)
    assert config.api_key() == "sk-from-home-file-0002"
    assert config.key_source.origin == f"file {home / '.dashscope' / 'api_key'}"
    config = resolve(home, DASHSCOPE_API_KEY_FILE_PATH=str(key_file))
    assert config.api_key() == "sk-from-file-path-0001"
    config = resolve(home, DASHSCOPE_API_KEY_FILE_PATH=str(key_file),
                     DASHSCOPE_API_KEY="sk-from-env-000003")
    assert (config.api_key(), config.key_source.origin) == ("sk-from-env-000003",
                                                            "DASHSCOPE_API_KEY")
    config = Config.resolve(api_key=" sk-argument-00004 ",
                            environ={"HOME": str(home), "DASHSCOPE_API_KEY": "sk-x-00000000"})
    assert (config.api_key(), config.key_source.origin) == ("sk-argument-00004", "argument")


def test_per_region_keys(home):
    env = dict(DASHSCOPE_API_KEY="sk-general-000001", DASHSCOPE_API_KEY_CN_BEIJING="sk-bj-0000002")
    assert resolve(home, "beijing", **env).api_key() == "sk-bj-0000002"
    assert resolve(home, "singapore", **env).api_key() == "sk-general-000001"
    env["DASHSCOPE_API_KEY_AP_SOUTHEAST_1"] = "sk-sg-0000003"
    assert resolve(home, "intl", **env).api_key() == "sk-sg-0000003"


@pytest.mark.parametrize("word, region", [
    ("ap-southeast-1", SG), ("Singapore", SG), ("intl", SG), ("SG", SG),
    ("cn-beijing", BJ), ("cn_beijing", BJ), ("Beijing", BJ), ("cn", BJ),
])
def test_region_words(home, word, region):
    assert resolve(home, word).region == region
    assert resolve(home, DASHSCOPE_API_REGION=word).region == region


def test_unknown_region_and_default(home):
    assert resolve(home).region == SG
    with pytest.raises(ConfigurationError) as caught:
        resolve(home, "mars")
    assert "Unknown region 'mars'" in str(caught.value) and "cn-beijing" in str(caught.value)


def test_base_urls(home):
    assert resolve(home, SG).base_url == "https://dashscope-intl.aliyuncs.com/api/v1"
    assert resolve(home, BJ).base_url == "https://dashscope.aliyuncs.com/api/v1"
    env = dict(DASHSCOPE_HTTP_BASE_URL="https://proxy.example/api/v1/",
               DASHSCOPE_HTTP_BASE_URL_CN_BEIJING="https://bj-proxy.example/api/v1")
    sg, bj = resolve(home, SG, **env), resolve(home, BJ, **env)
    assert (sg.base_url, sg.base_url_origin) == ("https://proxy.example/api/v1",
                                                 "DASHSCOPE_HTTP_BASE_URL")
    assert (bj.base_url, bj.base_url_origin) == ("https://bj-proxy.example/api/v1",
                                                 "DASHSCOPE_HTTP_BASE_URL_CN_BEIJING")


@pytest.mark.parametrize("url, allowed", [
    ("http://127.0.0.1:8765/api/v1", True),
    ("http://localhost:8765/api/v1", True),
    ("http://[::1]:8765/api/v1", True),
    ("http://10.0.0.5/api/v1", False),
    ("http://dashscope.aliyuncs.com/api/v1", False),
    ("ftp://127.0.0.1/api/v1", False),
])
def test_plain_http_only_to_loopback(home, url, allowed):
    if allowed:
        assert resolve(home, DASHSCOPE_HTTP_BASE_URL=url).base_url == url
    else:
        with pytest.raises(ConfigurationError) as caught:
            resolve(home, DASHSCOPE_HTTP_BASE_URL=url)
        assert "DASHSCOPE_HTTP_BASE_URL" in str(caught.value)


def test_missing_key_fails_before_sending_but_after_validation(home, emu):
    config = resolve(home, SG, DASHSCOPE_HTTP_BASE_URL=emu.base_url(SG))
    assert config.key_source is None
    with QwenImageClient(config) as client:
        with pytest.raises(ValidationError):
            client.text_to_image(TextToImageRequest(""))
        with pytest.raises(MissingApiKeyError) as caught:
            client.text_to_image(TextToImageRequest("a cat"))
    assert "DASHSCOPE_API_KEY" in str(caught.value) and "~/.dashscope/api_key" in str(caught.value)
    assert emu.requests == []


def test_environment_alone_configures_a_working_client(home, emu):
    env = dict(DASHSCOPE_API_REGION="cn", DASHSCOPE_API_KEY=SINGAPORE_KEY,
               DASHSCOPE_API_KEY_CN_BEIJING=BEIJING_KEY,
               DASHSCOPE_HTTP_BASE_URL_CN_BEIJING=emu.base_url(BJ))
    with QwenImageClient(resolve(home, **env), retry=FAST_RETRY) as client:
        result = client.text_to_image(TextToImageRequest("a bridge"), interface="sync")
    assert result.region == BJ and result.images
    [call] = emu.requests[:1]
    assert call.region == BJ and call.headers["Authorization"] == "Bearer sk-…jing"


# The account takes 10 calls a second, and the refused call in the other region comes first:
# after the two calls here, its limits (the table's, as that region's quotas API refuses the
# key) held its attempt for the rate window, a second.
@pytest.mark.parametrize("emulator", [roomy_rate("qwen-image-plus")], indirect=True)
def test_key_never_in_repr_str_or_log(home, emu, caplog):
    caplog.set_level(logging.DEBUG)
    config = resolve(home, SG, DASHSCOPE_API_KEY=SINGAPORE_KEY,
                     DASHSCOPE_HTTP_BASE_URL=emu.base_url(SG))
    with QwenImageClient(config, retry=FAST_RETRY) as client:
        wrong = Config.resolve(BJ, api_key=SINGAPORE_KEY, base_url=emu.base_url(BJ),
                               environ={"HOME": str(home)})
        with QwenImageClient(wrong, retry=FAST_RETRY) as other:
            with pytest.raises(AuthenticationError) as caught:
                other.text_to_image(TextToImageRequest("a fox"))
        client.text_to_image(TextToImageRequest("a fox"))
        client.text_to_image(TextToImageRequest("a fox"), interface="sync")
        texts = [repr(config), str(config), repr(config.key_source), repr(client)]
        texts.append(str(caught.value))
    assert "sk-…pore" in repr(client)
    assert caplog.records  # the run did log
    for text in texts + [caplog.text]:
        assert SINGAPORE_KEY not in text
