"""Qwen-Image (DashScope) for ComfyUI: text to image and image edit on Alibaba Cloud.

ComfyUI imports this folder under its folder name, whatever it is, and reads
``NODE_CLASS_MAPPINGS``. Importing needs no API key, no network and no torch: the key is
looked up when a node runs, and torch, requests and ComfyUI's modules are imported inside
the functions that use them.
"""
if __package__:  # ComfyUI, the tests and pip installs import the folder as a package
    from .nodes.image_edit import DISPLAY_NAME as _EDIT_NAME
    from .nodes.image_edit import NODE_ID as _EDIT_ID
    from .nodes.image_edit import DashScopeQwenImageEdit
    from .nodes.text_to_image import DISPLAY_NAME as _T2I_NAME
    from .nodes.text_to_image import NODE_ID as _T2I_ID
    from .nodes.text_to_image import DashScopeQwenImageTextToImage

    NODE_CLASS_MAPPINGS = {
        _T2I_ID: DashScopeQwenImageTextToImage,
        _EDIT_ID: DashScopeQwenImageEdit,
    }
    NODE_DISPLAY_NAME_MAPPINGS = {
        _T2I_ID: _T2I_NAME,
        _EDIT_ID: _EDIT_NAME,
    }
else:
    # pytest imports a repository root's __init__.py on its own, as a top-level module,
    # when the clone's folder name is not an identifier; it registers no nodes then.
    NODE_CLASS_MAPPINGS = {}
    NODE_DISPLAY_NAME_MAPPINGS = {}
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
