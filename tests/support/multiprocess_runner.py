"""One ComfyUI-like process for tests/test_multiprocess.py (not a test module itself).

    python tests/support/multiprocess_runner.py \\
        '{"prompt": ..., "seed": ..., "batch": ..., "edit": ...}'

Loads the repository as the package the way tests/conftest.py does, reads DashScope's base
URL, the key and the result store from the environment (set by the test), prints "ready",
waits for a line on stdin (so that every process starts sending at the same moment), then
runs a text-to-image node (batch images, seeds seed, seed+1, ...) and, with "edit", an
image-edit node side by side, as ComfyUI's executor runs two independent nodes. Prints one
JSON line with what each node returned; exit status 0 only if both nodes succeeded.
"""
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for support.*
from support.package import load_package  # noqa: E402 - needs the path above


async def run(config: dict) -> dict:
    import torch

    from qwen_image_dashscope.nodes.image_edit import DashScopeQwenImageEdit as Edit
    from qwen_image_dashscope.nodes.text_to_image import DashScopeQwenImageTextToImage as T2I
    from support.comfy_stubs.harness import widget_defaults

    async def node(node_class, **inputs):
        arguments = {**widget_defaults(node_class), "unique_id": node_class.__name__,
                     "reuse_stored": False, **inputs}
        images, _, info, _ = await getattr(node_class(), node_class.FUNCTION)(**arguments)
        return {"images": int(images.shape[0]), "info": json.loads(info)}

    runs = [node(T2I, prompt=config["prompt"], seed=config["seed"], batch=config["batch"])]
    if config.get("edit"):
        picture = torch.rand(1, 400, 520, 3, generator=torch.Generator().manual_seed(
            config["seed"]))
        runs.append(node(Edit, image=picture, prompt=f"{config['prompt']}, in snow",
                         seed=config["seed"], n=1))
    results = await asyncio.gather(*runs)
    return {"t2i": results[0], "edit": results[1] if len(results) > 1 else None}


def main() -> int:
    config = json.loads(sys.argv[1])
    load_package()
    # Everything the nodes import is loaded before "ready": imports are not part of the race.
    import torch  # noqa: F401

    from qwen_image_dashscope.api import client  # noqa: F401
    from qwen_image_dashscope.nodes import image_edit, tensors, text_to_image  # noqa: F401

    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(asyncio.run(run(config))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
