"""The version is one Python constant; pyproject.toml's static version repeats it."""
import re
from pathlib import Path

from qwen_image_dashscope import api
from qwen_image_dashscope.api.service import transport
from qwen_image_dashscope.api.version import VERSION

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_states_the_version_constant():
    project = PYPROJECT.read_text(encoding="utf-8").split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.findall(r'^version = "([^"]+)"', project, re.MULTILINE) == [VERSION]


def test_the_package_and_the_user_agent_report_it():
    assert api.__version__ == VERSION
    assert transport.USER_AGENT.startswith(f"qwen-image-dashscope/{VERSION}; ")
