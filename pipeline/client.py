"""The Python API for services at its published path; it lives with the other entry points in
:mod:`pipeline.app.client`."""

from pipeline.app.client import Client

__all__ = ["Client"]
