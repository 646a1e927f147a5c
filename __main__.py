"""``python -m qwen_image_dashscope``: the same command line as ``qwen-image``."""
from .api.cli import main

raise SystemExit(main())
