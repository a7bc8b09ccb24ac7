"""`deepdraft serve-model`: the embedded model served over HTTP as an OpenAI-compatible endpoint.

An interface, like the REST API beside it: it hands the cached model file to llama-cpp-python's own
server, under deepdraft's access rules. Other programs (or a deepdraft on another machine) then use
it as any endpoint. Needs the `local` extra, not the `server` one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from deepdraft.errors import ConfigError
from deepdraft.llm import embedded_models as models
from deepdraft.llm.embedded import LOCAL_EXTRA_HINT, llama_module


def model_server_app(
    name: str | None,
    *,
    host: str,
    context: int | None = None,
    token: str | None = None,
    cors_origins: Sequence[str] = (),
) -> Any:
    """llama-cpp-python's OpenAI-compatible app over the cached model `name` (it loads the model),
    under the same access rules as `deepdraft serve` (`deepdraft.http.security`).

    llama-cpp-python's server does the HTTP work (it accepts a GBNF `grammar` beside the OpenAI
    fields, which deepdraft's client sends). Its app lets every web origin call it with
    credentials, so any page the user visits could drive the model: that CORS layer is taken out,
    and the app gets the loopback host names, the cross-site refusal, the token on every path and
    CORS only for `cors_origins`. `host` is the address it will listen on: a non-loopback one
    without a token is refused before the model is loaded.
    """
    llama_module()
    try:
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
        from starlette.middleware.cors import CORSMiddleware

        from deepdraft.http import security  # Starlette, which llama-cpp-python's server brings
    except ImportError as exc:
        raise ConfigError(LOCAL_EXTRA_HINT) from exc
    security.check_bind(host, token)
    spec = models.get_spec(name or models.DEFAULT_MODEL)
    path = models.resolve_model(spec.name)
    app = create_app(
        server_settings=ServerSettings(host=host),
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
    app.user_middleware = [layer for layer in app.user_middleware if layer.cls is not CORSMiddleware]
    security.protect(app, bind_host=host, token=token, cors_origins=cors_origins)
    return app
