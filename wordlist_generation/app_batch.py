"""The batch service alone (exactly one worker): `uvicorn wordlist_generation.app_batch:app`."""

from .apps import create_batch_app

app = create_batch_app()
