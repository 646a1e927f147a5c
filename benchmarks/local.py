"""Benchmarks 3-5 (run by run.py): what the pack costs on this machine.

3. Local overhead per image at 1328x1328 and 2048x2048: IMAGE tensor -> request body and
   response PNG -> IMAGE tensor, against plain Pillow PNG encode and decode.
4. Peak memory of an edit node run that returns 6 images of 2048x2048, in a child process.
5. Import time of the pack with torch already loaded, as ComfyUI loads it.

run.py's docstring states each figure and target.
"""
from __future__ import annotations

import contextlib
import gc
import io
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from common import environment, fmt_ms, in_child, load_package, run_node, verdict

from support.package import import_as_comfyui  # noqa: E402 - common puts tests/ on sys.path

CALL_SECONDS = 15.0  # a typical cloud call, for "share of a call"


def natural_pixels(height: int, width: int, seed: int = 7):
    """A photo-like RGB uint8 image: smooth shapes at four scales plus fine sensor noise.

    Pillow's default PNG of it takes about 1.5 bytes per pixel, like a photograph or a
    generated picture (a flat drawing takes far less, pure noise far more).
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((4, 120), (16, 60), (64, 30), (256, 14)):
        small = rng.random((cells, cells, 3), dtype=np.float32)
        layer = np.stack([np.asarray(Image.fromarray(small[..., c], "F").resize(
            (width, height), Image.BICUBIC)) for c in range(3)], axis=-1)
        out += weight * (layer - 0.5)
    out += 128 + rng.normal(0, 2.5, out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)



# -- 3. local overhead per image ----------------------------------------------------------------

def bench_overhead(sides=(1328, 2048), repeats: int = 7) -> list[dict]:
    return [overhead_at(side, repeats) for side in sides]


def overhead_at(side: int, repeats: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from qwen_image_dashscope.api.images import encode_image, to_data_uri
    from qwen_image_dashscope.nodes import tensors

    pixels = natural_pixels(side, side)
    tensor = torch.from_numpy(pixels.astype(np.float32) / np.float32(255)).unsqueeze(0)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    response_png = buffer.getvalue()  # what a service would send back for these pixels
    sizes = {}

    def plain_encode():
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "PNG")
        return out.getvalue()

    def plain_decode():
        Image.open(io.BytesIO(response_png)).load()

    def ours_in():
        # What the edit node does to an input (nodes/image_edit.py, _encode_inputs), then
        # the body as the client sends it: a data URI in JSON, UTF-8.
        pixels_in, _ = tensors.to_uint8_rgb(tensor, "image")
        png = encode_image(pixels_in[0], "image").data
        sizes["ours_png"] = len(png)
        body = {"model": "qwen-image-edit-plus",
                "input": {"messages": [{"role": "user", "content": [
                    {"image": to_data_uri(png)}, {"text": "make it snow"}]}]},
                "parameters": {"negative_prompt": "", "n": 1, "watermark": False,
                               "prompt_extend": True, "seed": 1}}
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    kept = []  # ComfyUI keeps a node's outputs (its cache): the memory is not handed back

    def ours_out():
        images, _, _ = tensors.decode_images([response_png])
        kept.append(images)
        return images

    # Interleaved, so that other load on the machine hits all four alike.
    timings = {f: [] for f in (plain_encode, plain_decode, ours_in, ours_out)}
    for _ in range(repeats):
        for function, times in timings.items():
            gc.collect()
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
    assert np.array_equal(tensors.to_uint8_rgb(ours_out(), "x")[0][0], pixels)
    kept.clear()
    med = {f.__name__: statistics.median(t) for f, t in timings.items()}
    plain = med["plain_encode"] + med["plain_decode"]
    ours = med["ours_in"] + med["ours_out"]
    return {
        "side": side, **med, "plain": plain, "ours": ours, "ratio": ours / plain,
        "ratio_in": med["ours_in"] / med["plain_encode"],
        "ratio_out": med["ours_out"] / med["plain_decode"],
        "share": ours / CALL_SECONDS, "plain_png": len(response_png),
        "ours_png": sizes["ours_png"], "body": len(ours_in()),
    }


# -- 4. peak memory (child process) ----------------------------------------------------------

def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_memory(base_url: str, key: str, store: str, count: int, side: int,
                 input_side: int) -> dict:
    """Runs in its own process: the edit node returning ``count`` images of side x side."""
    import ctypes

    import numpy as np
    import torch

    load_package()
    from qwen_image_dashscope.nodes.image_edit import DashScopeQwenImageEdit as Edit

    frames = [natural_pixels(input_side, input_side, seed=s) for s in range(count)]
    inputs = torch.from_numpy(np.stack(frames).astype(np.float32) / np.float32(255))
    del frames
    with environment(base_url, key, store):
        # A small run first: module imports and thread stacks are not the images' cost.
        run_node(Edit, image=inputs[:1, :512, :512], prompt="warm up", reuse_stored=False)
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed memory is not a baseline
        before = _rss_kib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # resets VmHWM to the current RSS
            method = "VmHWM after /proc/self/clear_refs"
        except OSError:
            method = None
        sampled = [before]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                sampled.append(_rss_kib("VmRSS"))
                stop.wait(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        images, _, info, _ = run_node(Edit, image=inputs, prompt="make it snow", size="custom",
                                   width=side, height=side, n=1, seed=11, reuse_stored=False)
        wall = time.monotonic() - started
        stop.set()
        sampler.join()
        peak = _rss_kib("VmHWM") if method else max(sampled)
        method = method or "VmRSS sampled every 2 ms"
    output_bytes = images.numel() * images.element_size()
    return {"shape": list(images.shape), "before": before * 1024, "peak": peak * 1024,
            "delta": (peak - before) * 1024, "sampled_peak": max(sampled) * 1024,
            "output_bytes": output_bytes, "ratio": (peak - before) * 1024 / output_bytes,
            "wall": wall, "method": method, "images": json.loads(info)["images"]}


def bench_memory(count: int = 6, side: int = 2048, input_side: int = 1024) -> dict:
    from qwen_image_dashscope.api.emulator import SINGAPORE_KEY, Emulator

    with tempfile.TemporaryDirectory() as store, Emulator(latency=0.5, rate_limits=True) as emu:
        result = in_child("child-memory", [emu.base_url("ap-southeast-1"), SINGAPORE_KEY,
                                           store, count, side, input_side])
        result["served"] = sum(1 for r in emu.requests
                               if r.method == "POST" and r.path.endswith("/generation")
                               and r.status == 200)
    return result


# -- 5. import time --------------------------------------------------------------------------

def bench_import(runs: int = 7) -> dict:
    seconds = []
    with tempfile.TemporaryDirectory() as home:
        for _ in range(runs):
            loaded = import_as_comfyui(Path(home), preload_torch=True)
            assert len(loaded["nodes"]) == 2, loaded
            seconds.append(loaded["seconds"])
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
            "runs": runs}


def rows(results: dict) -> list[str]:
    """The report's rows of benchmarks 3-5 present in ``results``."""
    lines = []
    for row in results.get("overhead", []):
        side = row["side"]
        ok = row["ratio"] <= 1.0 and row["share"] <= 0.02
        lines.append(
            f"| 3 | Local overhead per image, {side}x{side} (tensor -> request body; response "
            f"PNG -> tensor) | ours / plain Pillow = **{row['ratio']:.2f}**; "
            f"{100 * row['share']:.2f} % of a 15 s call | <= 1.0 and < 2 % | "
            f"{'met' if ok else '**missed**'} | in {fmt_ms(row['ours_in'])} (Pillow PNG encode "
            f"{fmt_ms(row['plain_encode'])}, x{row['ratio_in']:.2f}); out "
            f"{fmt_ms(row['ours_out'])} (Pillow decode {fmt_ms(row['plain_decode'])}, "
            f"x{row['ratio_out']:.2f}); PNG {row['ours_png'] / 1e6:.2f} MB (Pillow default "
            f"{row['plain_png'] / 1e6:.2f} MB), body {row['body'] / 1e6:.2f} MB |")
    if "memory" in results:
        r = results["memory"]
        lines.append(
            f"| 4 | Peak memory, edit node returning {r['shape'][0]} images of "
            f"{r['shape'][2]}x{r['shape'][1]} (6 inputs, size custom, n = 1), own process "
            f"| (peak RSS - RSS before) / output tensor = **{r['ratio']:.2f}** | <= 2.0 | "
            f"{verdict(r['ratio'], 2.0)} | peak +{r['delta'] / 2**20:.0f} MiB over "
            f"{r['before'] / 2**20:.0f} MiB; output tensor {r['output_bytes'] / 2**20:.0f} MiB; "
            f"{r['method']}; call {r['wall']:.1f} s |")
    if "import" in results:
        r = results["import"]
        lines.append(
            f"| 5 | Import of the pack with torch loaded (as ComfyUI loads it, fresh process) "
            f"| median **{r['median'] * 1000:.1f} ms** | <= 100 ms | "
            f"{verdict(r['median'], 0.100)} | {r['runs']} runs: min {r['min'] * 1000:.1f} ms, "
            f"max {r['max'] * 1000:.1f} ms |")
    return lines
