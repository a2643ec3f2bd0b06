"""The chat service alone (multi-worker): `uvicorn wordlist_generation.app_chat:app`."""

from .apps import create_chat_app

app = create_chat_app()
