"""Stand-in for ComfyUI's ``folder_paths`` directory getters."""
import os
import tempfile

output_directory = os.path.join(tempfile.gettempdir(), "comfy-stub-output")
temp_directory = os.path.join(tempfile.gettempdir(), "comfy-stub-temp")
input_directory = os.path.join(tempfile.gettempdir(), "comfy-stub-input")


def set_output_directory(path):
    global output_directory
    output_directory = path


def get_output_directory():
    return output_directory


def get_temp_directory():
    return temp_directory


def get_input_directory():
    return input_directory
