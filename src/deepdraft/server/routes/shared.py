"""What the routers take from the application: its run manager and its ingestion queue."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from deepdraft.run.manager import RunManager
from deepdraft.server.kbs import IngestQueue


def _manager(request: Request) -> RunManager:
    manager: RunManager = request.app.state.manager
    return manager


def _ingest(request: Request) -> IngestQueue:
    ingest: IngestQueue = request.app.state.ingest
    return ingest


Manager = Annotated[RunManager, Depends(_manager)]
Ingest = Annotated[IngestQueue, Depends(_ingest)]
