"""The Starlette application: ``create_app`` and what it is made of.

- ``app``: the app factory, lifespan, health and static files;
- ``ws``: the socket pump for one WebSocket peer;
- ``http``: the HTTP routes on documents.
"""

from .app import create_app

__all__ = ["create_app"]
