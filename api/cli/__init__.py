"""The ``qwen-image`` command line (``commands``) and its terminal handling (``console``)."""
from .commands import main

__all__ = ["main"]
