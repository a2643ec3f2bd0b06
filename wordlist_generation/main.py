"""Chat and batch routers in one process (local development): `uvicorn wordlist_generation.main:app`."""

from .apps import create_app

app = create_app()
