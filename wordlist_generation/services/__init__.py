"""Orchestration between the protocol layer and the engine: no HTTP here."""
