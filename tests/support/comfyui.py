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
- ``comfyui_env()``, ``input_picture()``, ``write_inputs()``, ``pixels()``: what the tests
  with the DashScope emulator share (environment, LoadImage files, "the same picture").
- The real frontend (the ``comfyui_frontend_package`` ComfyUI serves) in headless Chromium,
  driven with playwright (imported only there): ``frontend_location()``, ``open_browser()``,
  ``open_app()``, ``load_workflow()``, ``graph_nodes()``, ``queue_from_frontend()``,
  ``wait_for_run()``, ``screenshot_node()``. See the section at the end.
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

REPO_ROOT = Path(__file__).resolve().parents[2]
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


def comfyui_env(base: Path, dashscope_url: str, key: str) -> dict:
    """ComfyUI's environment: this one without DASHSCOPE_*/QWEN_IMAGE_*, the emulator's URL
    and key, and a HOME of its own (no ~/.dashscope/api_key of this machine)."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("DASHSCOPE_", "QWEN_IMAGE_"))}
    env.update({"DASHSCOPE_HTTP_BASE_URL": dashscope_url, "DASHSCOPE_API_KEY": key,
                "HOME": str(base / "home"), "PYTHONUNBUFFERED": "1"})
    (base / "home").mkdir(exist_ok=True)
    return env


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
            except (OSError, HttpError) as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:"
                                       f"\n{self.log_text()[-4000:]}") from exc
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

    def request(self, method: str, path: str, body=None,
                timeout: float = 30.0) -> tuple[int, dict, bytes]:
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

    def queue(self, prompt: dict, workflow: dict | None = None,
              client_id: str = "integration-test") -> str:
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
            if control or (kind == "INT" and name in ("seed", "noise_seed")
                           and control is not False):
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


def pixels(png) -> tuple[tuple[int, int], bytes]:
    """(size, RGB bytes) of an image file or bytes: what "the same picture" means here."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png) if isinstance(png, bytes) else png) as image:
        rgb = image.convert("RGB")
        return rgb.size, rgb.tobytes()


def input_picture(name: str):
    """A recognisable PIL picture for each file name the example workflows load."""
    from PIL import Image, ImageDraw

    stem = name.lower()
    if "dress" in stem:
        image = Image.new("RGB", (768, 1024), (236, 232, 226))
        draw = ImageDraw.Draw(image)
        draw.polygon([(330, 180), (438, 180), (470, 420), (600, 900), (168, 900), (298, 420)],
                     fill=(24, 24, 28))
        draw.line([(330, 180), (300, 90)], fill=(24, 24, 28), width=10)
        draw.line([(438, 180), (468, 90)], fill=(24, 24, 28), width=10)
        return image
    if "pose" in stem:
        image = Image.new("RGB", (768, 1024), (214, 222, 230))
        draw = ImageDraw.Draw(image)
        draw.rectangle([(200, 560), (600, 600)], fill=(120, 86, 60))  # a bench
        draw.ellipse([(330, 220), (430, 320)], outline=(40, 40, 40), width=12)
        for a, b in [((380, 320), (380, 560)), ((380, 400), (280, 480)), ((380, 400), (480, 470)),
                     ((380, 560), (500, 580)), ((500, 580), (500, 820)), ((380, 560), (470, 600)),
                     ((470, 600), (460, 830))]:
            draw.line([a, b], fill=(40, 40, 40), width=12)
        return image
    # a person: sky, ground, head and a shirt
    image = Image.new("RGB", (768, 1024))
    draw = ImageDraw.Draw(image)
    for y in range(1024):
        t = y / 1023
        draw.line([(0, y), (767, y)],
                  fill=(int(110 + 80 * t), int(160 + 50 * t), int(230 - 40 * t)))
    draw.rectangle([(0, 820), (767, 1023)], fill=(96, 140, 84))
    draw.ellipse([(294, 170), (474, 370)], fill=(232, 190, 160))
    draw.ellipse([(300, 150), (468, 250)], fill=(70, 48, 36))
    draw.rounded_rectangle([(224, 380), (544, 900)], radius=80,
                           fill=(200, 60, 60) if "person" not in stem else (90, 90, 160))
    if "masked" in stem:  # transparent in the sky: LoadImage's MASK (1 - alpha) marks it
        image.putalpha(masked_region_alpha(image.size))
    return image


MASKED_REGION = [(70, 90), (250, 270)]  # the ellipse a "masked" input picture leaves transparent


def masked_region_alpha(size):
    from PIL import Image, ImageDraw

    alpha = Image.new("L", size, 255)
    ImageDraw.Draw(alpha).ellipse(MASKED_REGION, fill=0)
    return alpha


def write_inputs(input_dir: Path, names) -> dict[str, bytes]:
    """Write ``input_picture(name)`` as PNG into ComfyUI's input/ for each name; bytes by name."""
    import io

    written = {}
    for name in sorted(set(names)):
        buffer = io.BytesIO()
        input_picture(name).save(buffer, format="PNG")
        (input_dir / name).write_bytes(buffer.getvalue())
        written[name] = buffer.getvalue()
    return written


def workflow_load_image_files(workflow: dict) -> list[str]:
    """The input/ files a UI workflow's LoadImage nodes name (first widget value)."""
    return sorted({node["widgets_values"][0] for node in workflow.get("nodes", [])
                   if node.get("type") == "LoadImage" and node.get("widgets_values")})


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


# -- the real frontend in headless Chromium ---------------------------------------------------
#
# ComfyUI serves its frontend (the comfyui_frontend_package pip package; 1.35.9 with the Jan 2026
# tree). These helpers drive it with playwright's sync API: ``open_browser()`` (playwright and
# Chromium), ``open_app(browser, server)`` (a page with the app loaded), then functions taking
# that playwright page. All JS goes through the app object the frontend exposes,
# ``window.comfyAPI.app.app`` (the same object as the legacy ``window.app``), and its
# ``api`` (``window.comfyAPI.api.api``); the graph is ``app.graph`` (LiteGraph), its nodes
# ``app.graph._nodes``, each with ``widgets`` (``name``, ``value``, ``type``, ``hidden``,
# ``options``, ``serialize``).

CHROMIUM_ENV = "CHROMIUM_PATH"
CHROMIUM_DEFAULT = "/usr/bin/chromium"
# `playwright install` cannot download browsers here: the system Chromium, offline-friendly.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
VIEWPORT = {"width": 1800, "height": 1200}
# Settings a fresh user directory needs for a plain canvas (no Templates browser over it).
FRONTEND_SETTINGS = {"Comfy.TutorialCompleted": True}

# Runs before the page's own scripts: page errors and (after open_app) api events go here.
_INIT_SCRIPT = """
window.__qwenTest = {errors: [], console_errors: [], events: [], queued: []};
window.addEventListener('error',
                        (e) => window.__qwenTest.errors.push('error: ' + (e.message || e)));
// e.g. "Error loading extension /extensions/<pack>/x.js TypeError: Failed to fetch dynamically
// imported module": the frontend reports a pack's broken JS with console.error and goes on.
const consoleError = console.error.bind(console);
console.error = (...args) => {
  try {
    window.__qwenTest.console_errors.push(
      args.map((a) => a && a.stack ? String(a) + ' ' + a.stack : String(a)).join(' '));
  } catch (_) {}
  consoleError(...args);
};
window.addEventListener('unhandledrejection', (e) => window.__qwenTest.errors.push(
    'unhandled rejection: ' + (e.reason && (e.reason.stack || e.reason.message) || e.reason)));
"""
# The app object, whichever name this frontend version exposes.
_APP = "(window.comfyAPI && window.comfyAPI.app && window.comfyAPI.app.app) || window.app"
_READY = f"""() => {{
  const app = {_APP};
  return !!(app && app.vueAppReady && app.graph && app.canvas && app.api && window.LiteGraph
            && 'SaveImage' in LiteGraph.registered_node_types);
}}"""
# Records what the frontend sends and hears: every /prompt it POSTs (body and answer) and the
# execution events of the websocket, as the UI sees them.
_HOOKS = f"""() => {{
  const app = {_APP}, api = app.api, rec = window.__qwenTest;
  if (rec.hooked) return;
  rec.hooked = true;
  const queuePrompt = api.queuePrompt.bind(api);
  api.queuePrompt = async (number, data, options) => {{
    const entry = {{prompt: JSON.parse(JSON.stringify(data.output)), options: options || null}};
    rec.queued.push(entry);
    try {{
      entry.response = await queuePrompt(number, data, options);
      return entry.response;
    }} catch (error) {{
      entry.error = error && error.response ? error.response : String(error);
      throw error;
    }}
  }};
  for (const type of ['execution_start', 'execution_cached', 'executed', 'execution_success',
                      'execution_error', 'execution_interrupted', 'progress_text']) {{
    api.addEventListener(type, (e) => rec.events.push(
      {{type, detail: JSON.parse(JSON.stringify(e.detail ?? null))}}));
  }}
}}"""
_TWO_FRAMES = "await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));"


def frontend_location() -> Path | str:
    """The Chromium to drive, or why the frontend tests cannot run here."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    path = Path(os.environ.get(CHROMIUM_ENV) or CHROMIUM_DEFAULT)
    if not os.access(path, os.X_OK):
        return f"no Chromium at {path} (apt-get install chromium, or set {CHROMIUM_ENV})"
    return path


class Browser:
    """playwright + one headless Chromium;
    ``with open_browser() as browser: browser.new_page()``."""

    def __init__(self, chromium: Path | None = None):
        found = frontend_location() if chromium is None else Path(chromium)
        unusable = found if isinstance(found, str) else None
        if unusable:
            raise RuntimeError(unusable)
        self.chromium = found
        self._playwright = self.browser = None

    def __enter__(self):
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            self.browser = self._playwright.chromium.launch(
                executable_path=str(self.chromium), args=list(CHROMIUM_ARGS))
        except BaseException:
            self._playwright.stop()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.browser.close()
        finally:
            self._playwright.stop()

    def new_page(self, viewport: dict | None = None):
        page = self.browser.new_page(viewport=viewport or VIEWPORT)
        page.add_init_script(_INIT_SCRIPT)
        return page


def open_browser(chromium: Path | None = None) -> Browser:
    return Browser(chromium)


def open_app(browser: Browser, server: ComfyUI, timeout: float = 60.0):
    """A new page with ComfyUI's frontend loaded from ``server`` and ready (node types
    registered, canvas up), the recording hooks installed. Returns the playwright page."""
    for name, value in FRONTEND_SETTINGS.items():
        server.post(f"/api/settings/{name}", value)
    page = browser.new_page()
    page.goto(server.url, wait_until="domcontentloaded", timeout=timeout * 1000)
    page.wait_for_function(_READY, timeout=timeout * 1000)
    page.evaluate(_HOOKS)
    return page


def page_errors(page) -> list[str]:
    """Uncaught errors and unhandled rejections of the page so far."""
    return page.evaluate("() => window.__qwenTest.errors.slice()")


def console_errors(page) -> list[str]:
    """What the page's scripts passed to console.error so far (the frontend logs a custom node
    pack's JS that fails to load, "Error loading extension ...", this way and goes on)."""
    return page.evaluate("() => window.__qwenTest.console_errors.slice()")


def loaded_scripts(page) -> list[str]:
    """URLs of every script and module the page fetched (the Resource Timing entries)."""
    return page.evaluate("() => performance.getEntriesByType('resource').map((e) => e.name)")


def frontend_events(page, prompt_id: str | None = None) -> list[dict]:
    """The execution events the frontend received ({type, detail}), of one prompt if given
    (``progress_text`` carries no prompt id and is kept either way)."""
    events = page.evaluate("() => window.__qwenTest.events.slice()")
    if prompt_id is None:
        return events
    return [e for e in events if e["type"] == "progress_text"
            or (e["detail"] or {}).get("prompt_id") == prompt_id]


def load_workflow(page, workflow: dict) -> dict:
    """``app.loadGraphData(workflow)`` as opening a saved workflow does; returns what the
    frontend reported while loading: ``missing_node_types`` (as its missing-nodes dialog lists
    them), ``dialogs`` (text of open dialogs) and ``toasts`` (text of warn/error toasts, e.g.
    "Invalid workflow against zod schema")."""
    return page.evaluate(f"""async (workflow) => {{
      const app = {_APP};
      const missing = [];
      const extension = {{name: 'qwen-image-tests.load-' + Date.now() + '-' + Math.random(),
                         afterConfigureGraph(types) {{ missing.push(...(types || [])); }}}};
      app.registerExtension(extension);
      try {{
        await app.loadGraphData(workflow);
      }} finally {{
        extension.afterConfigureGraph = () => {{}};
      }}
      {_TWO_FRAMES}
      const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
      return {{
        missing_node_types: missing.map((t) => typeof t === 'string' ? t : t.type),
        dialogs: [...document.querySelectorAll('.p-dialog')].filter(visible)
                   .map((d) => d.innerText),
        toasts: [...document.querySelectorAll('.p-toast-message-warn, .p-toast-message-error')]
                  .map((t) => t.innerText),
      }};
    }}""", workflow)


EMPTY_WORKFLOW = {"last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "groups": [],
                  "config": {}, "extra": {}, "version": 0.4}


def save_workflow(page) -> dict:
    """The UI-format workflow of the live graph, as Save writes it (``app.graph.serialize()``)."""
    return page.evaluate(f"() => JSON.parse(JSON.stringify(({_APP}).graph.serialize()))")


def graph_nodes(page) -> list[dict]:
    """Every node of the live graph: id, type, title, pos, size, ``registered`` (its type is
    known to the frontend), ``has_errors`` (drawn red: missing node or a queue-time validation
    error), ``errors`` (the frontend's ``app.lastNodeErrors`` for it) and ``widgets`` in order:
    name, type, value, ``serialize`` (False: not saved in widgets_values, like the status-text
    widget), ``to_prompt`` (False: saved but not sent to the server, like "control after
    generate"), ``hidden`` (not drawn on the canvas), ``options_hidden`` (``options.hidden``: not
    drawn by the Vue "Nodes 2.0" renderer), ``advanced`` and ``values`` (a combo's choices)."""
    return page.evaluate(f"""() => {{
      const app = {_APP};
      const errors = app.lastNodeErrors || {{}};
      return app.graph._nodes.map((n) => ({{
        id: n.id, type: n.type, title: n.title, pos: [...n.pos], size: [...n.size], mode: n.mode,
        registered: n.type in LiteGraph.registered_node_types && !n.last_serialization,
        has_errors: !!n.has_errors,
        errors: errors[String(n.id)] || null,
        widgets: (n.widgets || []).map((w) => ({{
          name: w.name, type: w.type, value: w.value === undefined ? null : w.value,
          serialize: w.serialize !== false,
          to_prompt: !(w.options && w.options.serialize === false),
          hidden: !!w.hidden, options_hidden: !!(w.options && w.options.hidden),
          advanced: !!(w.advanced || (w.options && w.options.advanced)),
          values: w.options && Array.isArray(w.options.values) ? [...w.options.values] : null,
        }})),
      }}));
    }}""")


def saved_widgets(node: dict) -> list[dict]:
    """The widgets of a ``graph_nodes()`` entry whose values the frontend writes into
    ``widgets_values``, in that order (LGraphNode.configure restores them by this position)."""
    return [w for w in node["widgets"] if w["serialize"]]


def queue_from_frontend(page, queue_node_ids: list | None = None) -> dict:
    """Press Run: ``app.queuePrompt(0, 1, queue_node_ids)`` (with ids: only those output nodes
    and what they need, as "Queue selected output nodes" does). Returns ``ok`` (queued, no node
    errors), ``prompt`` (the API prompt the frontend built with graphToPrompt and POSTed),
    ``prompt_id``, ``node_errors`` (the server's, {} when none; a 400 also shows an error dialog
    and draws those nodes red), ``last_node_errors`` (``app.lastNodeErrors``), ``error`` and
    ``returned``: queuePrompt's own result, which 1.35.9 gets wrong (false whenever the answer
    has a ``node_errors`` object, even the empty one of a successful queue): do not use it."""
    return page.evaluate(f"""async (ids) => {{
      const app = {_APP}, rec = window.__qwenTest;
      const before = rec.queued.length;
      const returned = await app.queuePrompt(0, 1, ids || undefined);
      const sent = rec.queued.slice(before);
      const last = sent[sent.length - 1] || {{}};
      const nodeErrors = (last.response && last.response.node_errors)
                         || (last.error && last.error.node_errors) || {{}};
      const promptId = last.response ? last.response.prompt_id : null;
      return {{
        ok: !!promptId && Object.keys(nodeErrors).length === 0, returned, sent: sent.length,
        prompt: last.prompt || null, prompt_id: promptId, node_errors: nodeErrors,
        last_node_errors: app.lastNodeErrors || null, error: last.error || null,
      }};
    }}""", [str(i) for i in queue_node_ids] if queue_node_ids else None)


def wait_for_run(page, server: ComfyUI, prompt_id: str,
                 timeout: float = 120.0) -> tuple[dict, list[dict]]:
    """The /history entry of a prompt queued from the page, once the frontend has also seen it
    end (execution_success / execution_error / execution_interrupted over its websocket);
    returns (entry, the frontend's events of that prompt)."""
    entry = server.wait(prompt_id, timeout)
    ends = ("execution_success", "execution_error", "execution_interrupted")
    deadline = time.monotonic() + 10
    while True:
        events = frontend_events(page, prompt_id)
        if any(e["type"] in ends for e in events):
            return entry, events
        if time.monotonic() > deadline:
            raise TimeoutError(f"the frontend saw no end of {prompt_id}: {events}")
        time.sleep(0.05)


def add_node(page, node_type: str, pos=(0, 0), links: dict | None = None) -> int:
    """Add a node as the user would (LiteGraph.createNode + graph.add) at canvas ``pos``;
    ``links`` {input slot or name: (origin node id, origin slot)}. Returns its id."""
    return page.evaluate(f"""([type, pos, links]) => {{
      const app = {_APP};
      const node = LiteGraph.createNode(type);
      if (!node) throw new Error('unknown node type ' + type);
      node.pos = pos;
      app.graph.add(node);
      for (const [slot, [origin, originSlot]] of Object.entries(links || {{}})) {{
        const target = /^[0-9]+$/.test(slot) ? Number(slot) : node.findInputSlot(slot);
        app.graph.getNodeById(origin).connect(originSlot, node, target);
      }}
      app.canvas.setDirty(true, true);
      return node.id;
    }}""", [node_type, list(pos), links or {}])


def set_widgets(page, node_id, overrides: dict) -> None:
    """Set widget values as a user's pick does (``widget.setValue``: its callback and the
    node's onWidgetChanged run, so extensions that show/hide widgets react), then redraw."""
    page.evaluate(f"""async ([id, overrides]) => {{
      const app = {_APP};
      const node = app.graph.getNodeById(id);
      for (const [name, value] of Object.entries(overrides)) {{
        const widget = (node.widgets || []).find((w) => w.name === name);
        if (!widget) throw new Error('node ' + id + ' (' + node.type + ') has no widget ' + name +
                                     '; it has ' +
                                     (node.widgets || []).map((w) => w.name).join(', '));
        if (typeof widget.setValue === 'function')
          widget.setValue(value, {{e: undefined, node, canvas: app.canvas}});
        else {{ widget.value = value; widget.callback?.(value, app.canvas, node); }}
      }}
      app.canvas.setDirty(true, true);
      {_TWO_FRAMES}
    }}""", [node_id, overrides])


def screenshot_node(page, node_type: str, widget_overrides: dict | None, path, *,
                    node_id=None, margin: int = 8, scale: float = 1.0) -> dict:
    """A PNG of one node (its source badge and title bar to its bottom edge, plus ``margin``
    px) after setting ``widget_overrides`` ({widget name: value}, e.g. {"model":
    "qwen-image-max"}) as a user's pick does and letting the frontend redraw.

    The node: ``node_id`` if given, else the first ``node_type`` node of the graph, else a fresh
    one (defaults) added to the graph. The view is centred on it at ``scale`` with nothing
    selected. Returns that node's ``graph_nodes()`` entry plus ``clip`` (the page area saved).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if node_id is None:
        found = [n for n in graph_nodes(page) if n["type"] == node_type]
        if found:
            node_id = found[0]["id"]
        else:
            right = max((n["pos"][0] + n["size"][0] for n in graph_nodes(page)), default=0)
            node_id = add_node(page, node_type, (right + 200, 0))
    if widget_overrides:
        set_widgets(page, node_id, widget_overrides)
    clip = page.evaluate(f"""async ([id, scale, margin]) => {{
      const app = {_APP};
      const node = app.graph.getNodeById(id);
      const canvas = app.canvas;
      canvas.deselectAll?.();
      canvas.ds.scale = scale;
      canvas.centerOnNode(node);
      canvas.setDirty(true, true);
      {_TWO_FRAMES}
      // the title bar, and above it the source badge ("Qwen-Image") drawn at the top right
      const title = LiteGraph.NODE_TITLE_HEIGHT + 22;
      const [x0, y0] = app.canvasPosToClientPos([node.pos[0], node.pos[1] - title]);
      const [x1, y1] = app.canvasPosToClientPos([node.pos[0] + node.size[0],
                                                 node.pos[1] + node.size[1]]);
      const x = Math.max(0, Math.floor(x0 - margin)), y = Math.max(0, Math.floor(y0 - margin));
      return {{x, y, width: Math.min(window.innerWidth - x, Math.ceil(x1 + margin) - x),
               height: Math.min(window.innerHeight - y, Math.ceil(y1 + margin) - y)}};
    }}""", [node_id, scale, margin])
    page.screenshot(path=str(path), clip=clip)
    node = next(n for n in graph_nodes(page) if n["id"] == node_id)
    return {**node, "clip": clip, "path": str(path)}


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


def missing_local_models(object_info: dict, prompt: dict) -> dict[str, str]:
    """{node id: file} for loader nodes of an API prompt naming a file this ComfyUI lacks."""
    missing = {}
    for node_id, node in prompt.items():
        info = object_info[node["class_type"]]
        if not info["category"].startswith("loaders"):
            continue
        for name, value in node["inputs"].items():
            spec = (info["input"].get("required", {}).get(name)
                    or info["input"].get("optional", {}).get(name))
            if (spec and isinstance(spec[0], list) and isinstance(value, str)
                    and value not in spec[0]):
                missing[node_id] = value
    return missing
