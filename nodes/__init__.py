"""ComfyUI glue: widgets, tensor conversion, progress and interruption around ``api``."""
