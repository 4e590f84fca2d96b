"""A fault-injecting backend for tests: the echo backend, plus faults named in the prompt.

Selected in worker processes with ``ECOBATCH_BACKEND=tests.faultbackend:make_backend`` (the
``module:factory`` plugin form). A prompt containing one of these markers makes its batch:

- ``[sleep S]``: take S more seconds (so a test can act while it runs);
- ``[crash]``: kill its own process with SIGKILL (a segfault-like worker loss);
- ``[raise]``: raise ``RuntimeError``, as a failing llama.cpp call does;
- ``[hang]``: never return, in Python (the soft time limit interrupts it);
- ``[stuck]``: never return and ignore the soft time limit, as a long C call would (only the
  hard time limit, which kills the process, ends it).
"""

from __future__ import annotations

import os
import re
import signal
import time

from celery.exceptions import SoftTimeLimitExceeded

from pipeline.fleet.devices import Device
from pipeline.settings import Settings
from workers.backends.base import BatchOutput, GenerationRequest
from workers.backends.echo import EchoBackend, request_text

_SLEEP = re.compile(r"\[sleep ([0-9.]+)\]")


class FaultBackend(EchoBackend):
    """:class:`EchoBackend` that misbehaves on request (see the module docstring)."""

    def generate(self, requests: list[GenerationRequest]) -> BatchOutput:
        """Inject the faults the prompts ask for, then echo."""
        texts = [request_text(r) for r in requests]
        for text in texts:
            if (m := _SLEEP.search(text)) is not None:
                time.sleep(float(m.group(1)))
        joined = "\n".join(texts)
        if "[crash]" in joined:
            os.kill(os.getpid(), signal.SIGKILL)
        if "[raise]" in joined:
            raise RuntimeError("injected fault")
        if "[hang]" in joined:
            while True:
                time.sleep(1)
        if "[stuck]" in joined:
            _stuck()
        return super().generate(requests)


def _stuck() -> None:
    while True:
        try:
            time.sleep(1)
        except SoftTimeLimitExceeded:
            continue


def make_backend(device: Device, settings: Settings) -> FaultBackend:
    """The plugin factory: ``ECOBATCH_BACKEND=tests.faultbackend:make_backend``."""
    del device
    return FaultBackend(n_ctx_per_seq=settings.n_ctx_per_seq)
