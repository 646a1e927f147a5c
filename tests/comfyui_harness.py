"""Run a real ComfyUI in a subprocess for the integration test, and talk to it over HTTP.

Nothing here imports ComfyUI: it is started as a program (``$COMFYUI_PYTHON
$COMFYUI_DIR/main.py``) with its own base directory, and everything goes through its HTTP
API, as the browser would. Standard library, Pillow and numpy only.

- ``comfyui_location()``: (dir, python) from COMFYUI_DIR / COMFYUI_PYTHON, or the reason why
  not (the test skips itself with it; CI has no ComfyUI).
- ``make_base_dir()``: a base directory whose ``custom_nodes/<pack folder>`` links to the
  repository, as a ``git clone`` into custom_nodes would be.
- ``ComfyUI``: start, wait until it answers, GET/POST JSON, queue a prompt and wait for its
  history entry, stop with SIGTERM.
- ``ui_to_api()``: the UI-format workflow (what the frontend saves, what example_workflows
  hold) to the API-format prompt POST /prompt takes, as the frontend's graphToPrompt does for
  simple graphs.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The folder name a user gets from `git clone .../ComfyUI-Qwen-Image` into custom_nodes. It
# names the pack in /api/workflow_templates, /extensions and python_module, and it has a
# hyphen, so the pack must not rely on being importable under its folder name.
PACK_FOLDER = "ComfyUI-Qwen-Image"
BASE_SUBDIRS = ("custom_nodes", "input", "output", "temp", "user", "models/checkpoints")


def comfyui_location() -> tuple[Path, Path] | str:
    """(ComfyUI tree, its python) from the environment, or why they are not usable."""
    directory, python = os.environ.get("COMFYUI_DIR", ""), os.environ.get("COMFYUI_PYTHON", "")
    if not directory or not python:
        return "COMFYUI_DIR and COMFYUI_PYTHON are not set (no ComfyUI on this machine)"
    directory, python = Path(directory), Path(python)
    if not (directory / "main.py").is_file():
        return f"COMFYUI_DIR={directory} has no main.py"
    if not os.access(python, os.X_OK):
        return f"COMFYUI_PYTHON={python} is not an executable"
    return directory, python


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_base_dir(base: Path, repo: Path = REPO_ROOT, folder: str = PACK_FOLDER) -> Path:
    base = base.resolve()
    for sub in BASE_SUBDIRS:
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / folder
    if not link.exists():
        link.symlink_to(repo, target_is_directory=True)
    return base


class HttpError(Exception):
    def __init__(self, status: int, body: bytes, url: str):
        self.status, self.body, self.url = status, body, url
        super().__init__(f"HTTP {status} from {url}: {body[:500]!r}")

    def json(self):
        return json.loads(self.body)


@dataclass
class ComfyUI:
    """One ComfyUI server process with its own base directory and port."""

    directory: Path
    python: Path
    base: Path
    env: dict
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    started_in: float | None = None  # seconds from launch until it answered

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "comfyui-test.log"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def command(self) -> list[str]:
        return [str(self.python), str(self.directory / "main.py"), "--cpu",
                "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
                "--base-directory", str(self.base),
                "--database-url", f"sqlite:///{self.base / 'comfyui.db'}"]

    def start(self, timeout: float = 180.0) -> ComfyUI:
        launched = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.directory, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = launched + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} while starting:"
                                   f"\n{self.log_text()[-4000:]}")
            try:
                self.get("/api/system_stats", timeout=2)
                break
            except (OSError, HttpError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:"
                                       f"\n{self.log_text()[-4000:]}")
                time.sleep(0.25)
        self.started_in = time.monotonic() - launched
        return self

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (ComfyUI ignores SIGINT when started from a non-interactive shell)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(5)

    # -- HTTP ------------------------------------------------------------------------------

    def request(self, method: str, path: str, body=None, timeout: float = 30.0) -> tuple[int, dict, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            raise HttpError(error.code, error.read(), self.url + path) from None

    def get(self, path: str, timeout: float = 30.0):
        return json.loads(self.request("GET", path, timeout=timeout)[2])

    def get_bytes(self, path: str) -> tuple[dict, bytes]:
        _, headers, body = self.request("GET", path)
        return headers, body

    def post(self, path: str, body, timeout: float = 30.0):
        raw = self.request("POST", path, body, timeout=timeout)[2]
        return json.loads(raw) if raw.strip() else None

    # -- prompts ---------------------------------------------------------------------------

    def queue(self, prompt: dict, workflow: dict | None = None, client_id: str = "integration-test") -> str:
        """POST /prompt as the frontend does (the UI workflow goes into the PNG's metadata)."""
        body = {"client_id": client_id, "prompt": prompt}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        return self.post("/prompt", body)["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 120.0) -> dict:
        """The /history entry of a prompt once it has finished (successfully or not)."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.log_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s; "
                                   f"queue: {self.get('/queue')}")
            time.sleep(0.1)

    def run(self, prompt: dict, workflow: dict | None = None, timeout: float = 120.0) -> dict:
        return self.wait(self.queue(prompt, workflow), timeout)


def messages(entry: dict) -> dict[str, dict]:
    """{event name: data} of a history entry's status messages."""
    return {name: data for name, data in entry["status"]["messages"]}


def saved_images(entry: dict, output_dir: Path) -> list[Path]:
    """Every file SaveImage reported in a history entry, in node then batch order."""
    files = []
    for node_output in entry["outputs"].values():
        for image in node_output.get("images", []):
            if image.get("type") == "output":
                files.append(output_dir / image["subfolder"] / image["filename"])
    return files


# -- UI workflow -> API prompt -------------------------------------------------------------

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Frontend-only nodes: never part of a prompt.
VIRTUAL_NODES = {"Note", "MarkdownNote"}
# Frontend-only nodes that pass values or links along; this converter does not resolve them.
UNSUPPORTED_NODES = {"Reroute", "PrimitiveNode"}
MODE_NEVER, MODE_BYPASS = 2, 4
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")


def widget_inputs(info: dict) -> list[tuple[str, int]]:
    """(name, extra values after it in widgets_values) for each widget, in the frontend's order.

    A widget exists for INT/FLOAT/STRING/BOOLEAN/COMBO inputs (not ``forceInput``); socket
    types such as IMAGE take none. INTs named seed/noise_seed, and any input with
    ``control_after_generate``, get a "control after generate" value right after theirs;
    LoadImage-style inputs with ``image_upload`` get the upload button's value.
    """
    result = []
    for section in ("required", "optional"):
        for name in info.get("input_order", {}).get(section, []):
            spec = info["input"][section][name]
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if not (isinstance(kind, list) or kind in WIDGET_TYPES) or options.get("forceInput"):
                continue
            extra = 0
            control = options.get("control_after_generate")
            if control or (kind == "INT" and name in ("seed", "noise_seed") and control is not False):
                extra += 1
            extra += sum(1 for option in UPLOAD_OPTIONS if options.get(option))
            result.append((name, extra))
    return result


def _links(workflow: dict) -> dict[int, tuple[int, int]]:
    """link id -> (origin node id, origin slot); list or object form."""
    table = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            table[link["id"]] = (link["origin_id"], link["origin_slot"])
        else:
            table[link[0]] = (link[1], link[2])
    return table


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The API prompt for a UI-format workflow (what the frontend would POST).

    Raises ValueError when widgets_values does not hold exactly one value per widget (plus
    the control/upload values): the workflow and the node's INPUT_TYPES disagree, and the
    frontend would load it with shifted values.
    """
    if workflow.get("definitions", {}).get("subgraphs"):
        raise NotImplementedError("subgraphs are not converted")
    links = _links(workflow)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    prompt = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind in VIRTUAL_NODES or node.get("mode", 0) == MODE_NEVER:
            continue
        if kind in UNSUPPORTED_NODES or node.get("mode", 0) == MODE_BYPASS:
            raise NotImplementedError(f"node {node['id']}: {kind} / mode {node.get('mode')}")
        if kind not in object_info:
            raise ValueError(f"node {node['id']}: {kind!r} is not a node this ComfyUI knows")
        info = object_info[kind]
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):
            raise NotImplementedError(f"node {node['id']}: widgets_values as a dict")
        inputs, position = {}, 0
        for name, extra in widget_inputs(info):
            if position >= len(values):
                raise ValueError(f"node {node['id']} ({kind}): no value for widget {name!r} "
                                 f"in widgets_values {values!r}")
            value = values[position]
            inputs[name] = {"__value__": value} if isinstance(value, list) else value
            position += 1 + extra
        if position != len(values):
            raise ValueError(f"node {node['id']} ({kind}): {len(values)} widgets_values for "
                             f"{position} expected ({[n for n, _ in widget_inputs(info)]})")
        for socket_input in node.get("inputs", []):
            link = socket_input.get("link")
            if link is None:
                continue
            origin, slot = links[link]
            origin_node = nodes[origin]
            if origin_node["type"] in VIRTUAL_NODES | UNSUPPORTED_NODES:
                raise NotImplementedError(f"link {link} comes from a {origin_node['type']}")
            if origin_node.get("mode", 0) == MODE_NEVER:
                continue  # links to nodes left out of the prompt are dropped
            inputs[socket_input["name"]] = [str(origin), slot]
        prompt[str(node["id"])] = {
            "inputs": inputs, "class_type": kind,
            "_meta": {"title": node.get("title") or info.get("display_name") or kind}}
    return prompt


def load_image_files(prompt: dict) -> list[str]:
    """The input/ file names LoadImage nodes of a prompt read."""
    return sorted({node["inputs"]["image"] for node in prompt.values()
                   if node["class_type"] == "LoadImage"})


def upstream(prompt: dict, node_id: str) -> set[str]:
    """node_id and every node it depends on through links."""
    seen, todo = set(), [node_id]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for value in prompt[current]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                todo.append(value[0])
    return seen


if __name__ == "__main__":  # a manual smoke run: start, print the start-up time, stop
    import tempfile

    found = comfyui_location()
    if isinstance(found, str):
        sys.exit(found)
    with tempfile.TemporaryDirectory() as tmp:
        server = ComfyUI(*found, base=make_base_dir(Path(tmp)), env=dict(os.environ))
        server.start()
        print(f"ComfyUI answered after {server.started_in:.1f} s on {server.url}")
        print(f"stopped: exit code {server.stop()}")
