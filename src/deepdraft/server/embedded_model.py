"""`deepdraft serve-model`: the embedded model served over HTTP as an OpenAI-compatible endpoint.

An interface, like the REST API beside it: it hands the cached model file to llama-cpp-python's own
server. Other programs (or a deepdraft on another machine) then use it as any endpoint. Needs the
`local` extra, not the `server` one.
"""

from __future__ import annotations

import os

from deepdraft.errors import ConfigError
from deepdraft.llm import embedded_models as models
from deepdraft.llm.embedded import LOCAL_EXTRA_HINT, llama_module


def serve(name: str | None, *, host: str, port: int, context: int | None = None) -> None:
    """Serve the embedded model over HTTP as an OpenAI-compatible endpoint, until interrupted.

    llama-cpp-python's own server does the HTTP work (it accepts a GBNF `grammar` beside the
    OpenAI fields, which deepdraft's client sends); this only points it at the cached model.
    """
    llama_module()
    try:
        import uvicorn
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as exc:
        raise ConfigError(LOCAL_EXTRA_HINT) from exc
    spec = models.get_spec(name or models.DEFAULT_MODEL)
    path = models.resolve_model(spec.name)
    app = create_app(
        server_settings=ServerSettings(host=host, port=port),
        model_settings=[
            ModelSettings(
                model=str(path),
                model_alias=spec.name,
                n_ctx=context or spec.default_context,
                n_threads=os.cpu_count() or 2,
                verbose=False,
            )
        ],
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
