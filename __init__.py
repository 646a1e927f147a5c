"""Qwen-Image (DashScope) for ComfyUI: text to image and image edit on Alibaba Cloud.

ComfyUI imports this folder under its folder name, whatever it is, and reads
``NODE_CLASS_MAPPINGS`` (with ``hasattr``/``getattr``). The mappings are built on that
first read (PEP 562), so importing the package, or its plain client
``qwen_image_dashscope.api`` and the ``qwen-image`` command line, loads no node module.
Importing needs no API key, no network and no torch: the key is looked up when a node
runs, and torch and ComfyUI's modules are imported inside the functions that use them.
"""
from __future__ import annotations

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]


def _node_mappings() -> tuple[dict, dict]:
    from .nodes import image_edit, text_to_image

    nodes = ((text_to_image, text_to_image.DashScopeQwenImageTextToImage),
             (image_edit, image_edit.DashScopeQwenImageEdit))
    classes = {module.NODE_ID: node for module, node in nodes}
    names = {module.NODE_ID: module.DISPLAY_NAME for module, _ in nodes}
    return classes, names


def __getattr__(name: str):
    if name not in ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    classes, names = _node_mappings()
    globals().update(NODE_CLASS_MAPPINGS=classes, NODE_DISPLAY_NAME_MAPPINGS=names)
    return globals()[name]
