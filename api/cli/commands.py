"""``qwen-image``: the command line on the same client the nodes use.

    qwen-image generate "a cat on a sofa" --size 1664*928 --out ./images
    qwen-image generate "a poster" --model qwen-image-3.0 --size 1536x1024 --n 4
    qwen-image edit "make the cat blue" cat.png --n 2
    qwen-image doctor          # configuration, which key serves which region, the budget
    qwen-image recover         # save the images of requests a crash or Ctrl-C left behind
    qwen-image emulator        # the bundled DashScope stand-in on 127.0.0.1
    qwen-image demo            # generate + edit; on the emulator when no key is set
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from ..catalog.models import DEFAULT_MODEL, MODELS, models_of
from ..catalog.regions import REGIONS, WORKSPACE_ENV, other_region, region_env_suffix
from ..catalog.specs import (
    IMAGE_EDIT,
    INPUT_TRANSPORTS,
    PROMPT_EXTEND_MODES,
    REQUEST_BODY_TARGET,
    TEXT_TO_IMAGE,
)
from ..catalog.validation import normalize_size
from ..config import BUDGET_IMAGES_ENV, BUDGET_USD_ENV, Config
from ..errors import CancelledError, ConfigurationError, QwenImageError, ValidationError
from .console import Console, TerminalStream

DEFAULT_OUT = Path("qwen-image-output")
log = logging.getLogger("qwen_image")


def _client(args, config: Config | None = None):
    from ..client import QwenImageClient
    from ..storage.store import ResultStore

    config = config or Config.resolve(region=getattr(args, "region", None))
    store = ResultStore(Path(args.out))
    store.ensure_writable()  # before anything is paid for
    return QwenImageClient(config, store=store)


def _report(result) -> None:
    stream = TerminalStream(sys.stdout)  # prompts, notes and ids come from outside
    for image in result.images:
        stream.write(f"{image.saved_path or image.url}  ({image.width}x{image.height})\n")
    cost = f"${result.cost_usd:.4f}" if result.cost_usd is not None else "unknown"
    stream.write(f"model {result.model}, region {result.region}, estimated cost {cost}"
                 + (f", task {result.task_id}" if result.task_id else "")
                 + (f", request {result.request_id}" if result.request_id else "") + "\n")
    if result.actual_prompt and result.actual_prompt != result.orig_prompt:
        stream.write(f"prompt used: {result.actual_prompt}\n")
    for note in result.notes:
        stream.write(f"note: {note}\n")


def _options(args) -> dict:
    """The request fields both commands share; rules and defaults are the model table's."""
    return dict(prompt=args.prompt, model=args.model, negative_prompt=args.negative_prompt,
                size=normalize_size(args.size), n=args.n, prompt_extend=args.prompt_extend,
                prompt_extend_mode=args.prompt_extend_mode,
                enable_thinking=args.enable_thinking, watermark=args.watermark,
                seed=args.seed)


def _generate(client, args) -> int:
    from ..schema import TextToImageRequest

    request = TextToImageRequest(**_options(args))
    result = args.console.run(lambda progress, cancel: client.text_to_image(
        request, interface=args.interface, on_progress=progress, cancel_event=cancel),
        client.store.directory)
    _report(result)
    return 0


def _edit(client, args) -> int:
    from ..schema import ImageEditRequest

    images = tuple(path if path.startswith(("http://", "https://", "oss://"))
                   else _read_input(path) for path in args.images)
    request = ImageEditRequest(images=images, **_options(args))
    result = args.console.run(lambda progress, cancel: client.edit_image(
        request, input_transport=args.input_transport, on_progress=progress,
        cancel_event=cancel), client.store.directory)
    _report(result)
    return 0


def _read_input(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValidationError("images", f"cannot read {path!r} ({exc.strerror or exc})",
                              hint="Nothing was sent.") from None


def cmd_generate(args) -> int:
    return _generate(_client(args), args)


def cmd_edit(args) -> int:
    return _edit(_client(args), args)


def cmd_doctor(args) -> int:
    """Per region: the URL, the key that serves it, whether the service accepts it (and, if
    not, whether the other region does), and how large edit inputs travel; then the budget.

    The check is a task query for a random id (answered UNKNOWN for a valid key, 401 for
    an invalid one), so it costs nothing.
    """
    from ..client import QwenImageClient
    from ..storage.budget import SpendGuard

    default = Config.resolve(region=args.region)
    out = TerminalStream(sys.stdout)
    out.write(f"default region  {default.region} ({default.region_info.name})\n")
    accepted = {}
    for region in sorted(REGIONS, key=lambda r: r != default.region):
        name = REGIONS[region].name
        try:
            config = Config.resolve(region=region)
        except ConfigurationError as error:
            out.write(f"{name:<10} URL  none: set {WORKSPACE_ENV} (workspace-dedicated hosts "
                      f"only) or DASHSCOPE_HTTP_BASE_URL_{region_env_suffix(region)}\n")
            log.debug("%s", error)
            continue
        out.write(f"{name:<10} URL  {config.base_url}  [{config.base_url_origin}]\n")
        out.write(f"{name:<10} large edit inputs  " + (
            "uploaded to temporary storage (kept 48 h, each image once)"
            if config.region_info.temporary_storage else
            "re-encoded to fit (no temporary storage here)")
            + f" beyond {REQUEST_BODY_TARGET / 2**20:g} MiB per request\n")
        if config.key_source is None:
            out.write(f"{name:<10} key  none (DASHSCOPE_API_KEY_{region_env_suffix(region)}, "
                      "DASHSCOPE_API_KEY or ~/.dashscope/api_key)\n")
            continue
        with QwenImageClient(config) as client:
            try:
                accepted[region] = client.check_key(region)
                verdict = "accepted" if accepted[region] else "rejected (InvalidApiKey)"
                if not accepted[region] and config.other_base_url:
                    there = REGIONS[other_region(region)].name
                    verdict += (f": it is a {there} key" if client.check_key(other_region(region))
                                else f": not accepted in {there} either")
            except QwenImageError as error:
                verdict = f"not checked: {error}"
        out.write(f"{name:<10} key  {config.key_source.masked}  [{config.key_source.origin}]"
                  f"  {verdict}\n")
    guard = SpendGuard.from_settings(default.budget)
    out.write("budget     " + (guard.status().summary() if guard is not None else
                                f"none (set {BUDGET_IMAGES_ENV} and/or {BUDGET_USD_ENV})") + "\n")
    return 0 if accepted.get(default.region) else 1


def cmd_recover(args) -> int:
    """Finish what the journal left open in the last 24 hours: poll, find and download
    every image that succeeded into the store its entry names (or --out)."""
    from ..recovery.unfinished import recover_all
    from ..storage.journal import Journal
    from ..storage.store import ResultStore

    out = ResultStore(Path(args.out)) if args.out else None
    if out is not None:
        out.ensure_writable()
    journal = Journal.in_folder(Config.resolve(region=args.region).journal_dir)
    return 0 if recover_all(journal, out, TerminalStream(sys.stdout),
                            recovery_clients(journal)) else 1


def recovery_clients(journal):
    """For ``recover``: a client of an entry's region, configured from the environment."""
    from ..client import QwenImageClient

    return lambda region: QwenImageClient(Config.resolve(region=region), journal=journal)


def cmd_emulator(args) -> int:
    from ..emulator import BEIJING_KEY, SINGAPORE_KEY, serve

    logging.getLogger().setLevel(logging.INFO)  # serve() logs its URLs and keys at INFO
    base = f"http://{args.host}:{args.port}"
    sys.stdout.write(
        "Point the pack, the CLI or the dashscope SDK at it with:\n"
        f"  export DASHSCOPE_HTTP_BASE_URL={base}/ap-southeast-1/api/v1"
        f" DASHSCOPE_API_KEY={SINGAPORE_KEY}\n"
        f"  (Beijing: {base}/cn-beijing/api/v1 with {BEIJING_KEY})\n")
    sys.stdout.flush()
    serve(host=args.host, port=args.port, latency=args.latency,
          rate_limits=not args.no_rate_limits, rgba=args.rgba)
    return 0


def cmd_demo(args) -> int:
    """Generate an image and edit it; on the bundled emulator when no key is configured."""
    config = Config.resolve(region=args.region)
    with contextlib.ExitStack() as stack:
        if config.key_source is None:
            from ..emulator import SINGAPORE_KEY, Emulator

            emulator = stack.enter_context(Emulator(latency=args.latency))
            config = Config.resolve(region="ap-southeast-1", api_key=SINGAPORE_KEY,
                                    base_url=emulator.base_url("ap-southeast-1"))
            sys.stderr.write(f"No DASHSCOPE_API_KEY set: using the bundled emulator at "
                             f"{emulator.url} (no cost, synthetic images).\n")
        else:
            sys.stderr.write(f"Using DashScope {config.region_info.name} at {config.base_url}: "
                             "this is billed (two images).\n")
        client = _client(args, config)
        from ..schema import ImageEditRequest, TextToImageRequest

        generated = args.console.run(lambda progress, cancel: client.text_to_image(
            TextToImageRequest(prompt="A red fox reading a newspaper in a snowy forest, "
                                      "watercolour", seed=42),
            on_progress=progress, cancel_event=cancel), client.store.directory)
        _report(generated)
        edited = args.console.run(lambda progress, cancel: client.edit_image(
            ImageEditRequest(prompt="Make it a summer meadow at sunset",
                             images=(generated.images[0].data,), seed=42),
            on_progress=progress, cancel_event=cancel), client.store.directory)
        _report(edited)
    sys.stdout.write(f"Images and JSON sidecars are in {Path(args.out).resolve()}\n")
    return 0


def _model_list(family: str) -> str:
    """The ``--help`` epilog: every model of the table for ``family``, with n and sizes."""
    lines = ["models:"]
    for model in models_of(family):
        spec = MODELS[model]
        rule = spec.size_rule(family)
        if rule is None:
            sizes = "no size parameter"
        elif rule.fixed:
            sizes = "sizes " + ", ".join(rule.sizes[:5])
        elif rule.max_area:
            sizes = f"any W*H of {rule.min_area or 0}-{rule.max_area} pixels"
        elif rule.side:
            sizes = f"any W*H, sides {rule.side[0]}-{rule.side[1]}"
        else:
            sizes = "any W*H (limits unconfirmed)"
        n = f"n 1-{spec.n_max}" if spec.n_max else "n unconfirmed"
        lines.append(f"  {model:<34} {spec.kind:<13} {n:<13} {sizes}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwen-image", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log HTTP activity")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, family):
        p.add_argument("prompt")
        p.add_argument("--model", default=DEFAULT_MODEL[family],
                       help="a model listed below, or any other id (limits then unknown)")
        p.add_argument("--negative-prompt", default=None)
        p.add_argument("--n", type=int, default=1,
                       help="images per call (1-6 where the model takes it)")
        p.add_argument("--size", default=None, metavar="WxH",
                       help="W*H or WxH: one of the model's sizes, or any size within its "
                            "area range (free-size models); default: the model's")
        p.add_argument("--prompt-extend-mode", choices=PROMPT_EXTEND_MODES, default=None,
                       help="3.0: direct (default) or agent (text to image only)")
        p.add_argument("--no-thinking", dest="enable_thinking", action="store_false",
                       default=None, help="3.0: no thinking step while rewriting the prompt")
        p.add_argument("--seed", type=int, default=None, help="0..2147483647 (default: random)")
        p.add_argument("--no-prompt-extend", dest="prompt_extend", action="store_false",
                       default=None, help="do not let the service rewrite the prompt")
        p.add_argument("--watermark", action="store_true", default=None)
        p.add_argument("--region", default=None, help="one of " + ", ".join(
            r.label for r in REGIONS.values()) + " (default: Singapore)")
        p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for images + sidecars")

    gen = sub.add_parser("generate", help="text to image", epilog=_model_list(TEXT_TO_IMAGE),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    common(gen, TEXT_TO_IMAGE)
    gen.add_argument("--interface", choices=["async", "sync"], default=None,
                     help="async (default: cancellable, safe to re-poll) or sync")
    gen.set_defaults(func=cmd_generate)

    edit = sub.add_parser("edit", help="image edit (input images + instruction)",
                          epilog=_model_list(IMAGE_EDIT),
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    common(edit, IMAGE_EDIT)
    edit.add_argument("images", nargs="+",
                      help="image files or http(s) URLs (1-3; 1-10 for qwen-image-2.1-pro)")
    edit.add_argument("--input-transport", choices=INPUT_TRANSPORTS,
                      default=INPUT_TRANSPORTS[0],
                      help="auto: inline while the request stays small, else upload (Beijing) "
                           "or re-encode to fit (Singapore); data_uri; upload (Beijing only)")
    edit.set_defaults(func=cmd_edit)

    doctor = sub.add_parser("doctor", help="show the configuration and check the key")
    doctor.add_argument("--region", default=None)
    doctor.set_defaults(func=cmd_doctor)

    recover = sub.add_parser("recover", help="save the images of requests the journal "
                                             "left unfinished (crash, Ctrl-C, lost answer)")
    recover.add_argument("--out", default=None,
                         help="folder for the images (default: the one each request named)")
    recover.add_argument("--region", default=None)
    recover.set_defaults(func=cmd_recover)

    emu = sub.add_parser("emulator", help="serve the DashScope emulator on 127.0.0.1")
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=8765)
    emu.add_argument("--latency", type=float, default=2.0, help="seconds per generation")
    emu.add_argument("--no-rate-limits", action="store_true")
    emu.add_argument("--rgba", action="store_true",
                     help="serve every result as an RGBA PNG, transparent in places (as the "
                          "Qwen-Image 2.1 family makes them)")
    emu.set_defaults(func=cmd_emulator)

    demo = sub.add_parser("demo", help="generate and edit one image (emulator if no key)")
    demo.add_argument("--region", default=None)
    demo.add_argument("--out", default=str(DEFAULT_OUT))
    demo.add_argument("--latency", type=float, default=1.0, help="emulator seconds per image")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.console = console = Console()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s",
                        stream=TerminalStream(sys.stderr))  # log lines quote the service
    try:
        return args.func(args)
    except CancelledError as error:  # cancelled before it started: nothing to wait for
        console.say(f"{error}")
        return 130
    except KeyboardInterrupt:
        task = console.task_id
        console.say(f"Left. Task {task} goes on at DashScope; `qwen-image recover` saves its "
                     "images (within 24 hours)." if task else
                     "Left. If the request had been sent, `qwen-image recover` saves what it "
                     "made (within 24 hours).")
        return 130
    except QwenImageError as error:
        console.say(f"error: {error}")
        return 2
