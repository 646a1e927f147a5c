"""Stand-in for ComfyUI's ``server.PromptServer``: records the status texts sent to nodes."""
import threading


class PromptServer:
    instance = None

    def __init__(self):
        self.progress_texts = []  # (node_id, text)
        self._lock = threading.Lock()

    def send_progress_text(self, text, node_id, sid=None):
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8")
        with self._lock:
            self.progress_texts.append((str(node_id), text))

    def texts_for(self, node_id):
        with self._lock:
            return [text for node, text in self.progress_texts if node == str(node_id)]


PromptServer.instance = PromptServer()
