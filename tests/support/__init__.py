"""What the tests share besides their fixtures (those are all in ``tests/conftest.py``).

- ``package``: the repository loaded as the package ``qwen_image_dashscope``, as ComfyUI
  loads a pack from its folder (also used by the benchmarks and child processes);
- ``client``: clients of the emulator and small helpers of the client tests;
- ``comfy_stubs``: stand-ins for ComfyUI's modules, and ``comfy_stubs.harness``, which runs
  the node classes as ComfyUI's executor does;
- ``comfyui``: a real ComfyUI and its frontend in headless Chromium (skipped without them);
- ``multiprocess_runner``: one ComfyUI-like process of ``test_multiprocess.py``.
"""
