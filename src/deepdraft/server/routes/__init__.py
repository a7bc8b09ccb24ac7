"""The REST API by resource, one `APIRouter` each; `deepdraft.server.app` includes them in this order."""
