"""automerge-bridge: a sync server for Automerge whose acknowledgements mean durable."""

from .config import Limits
from .hub import DocNotFound, Hub
from .local import FlushTimeout, LocalDoc, open_local
from .server.app import create_app

__all__ = ["create_app", "Hub", "Limits", "LocalDoc", "open_local", "DocNotFound", "FlushTimeout"]
