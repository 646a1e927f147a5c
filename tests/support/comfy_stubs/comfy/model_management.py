"""Stand-in for ``comfy.model_management``: the interrupt flag with ComfyUI's semantics.

``interrupt_current_processing()`` is what ComfyUI's Cancel button (POST /interrupt) calls;
``throw_exception_if_processing_interrupted`` raises once and clears the flag, as ComfyUI's does.
"""
import threading


class InterruptProcessingException(Exception):
    pass


interrupt_processing_mutex = threading.RLock()
interrupt_processing = False
polls = 0  # calls of processing_interrupted(), to check that a waiting node looks at the flag
raised = 0  # InterruptProcessingExceptions raised by throw_exception_if_processing_interrupted


def interrupt_current_processing(value=True):
    global interrupt_processing
    with interrupt_processing_mutex:
        interrupt_processing = value


def processing_interrupted():
    global polls
    with interrupt_processing_mutex:
        polls += 1
        return interrupt_processing


def throw_exception_if_processing_interrupted():
    global interrupt_processing, raised
    with interrupt_processing_mutex:
        if interrupt_processing:
            interrupt_processing = False
            raised += 1
            raise InterruptProcessingException()
