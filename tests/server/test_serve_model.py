"""`deepdraft serve-model` under the same access rules as `deepdraft serve`.

llama-cpp-python's own app lets any web origin call it with credentials, so any page the user
visits could drive the model. These tests serve the app that `serve` builds — the real
llama-cpp-python server over the real cached model, loaded once for the module — and send it only
requests that are refused or generate a single token.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from deepdraft.llm import embedded_models as models
from tests.conftest import REAL_MODELS
from tests.server.conftest import LiveServer

EVIL = "http://evil.example"
CHAT = {"messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 1, "temperature": 0}


@pytest.fixture(scope="module")
def model_server() -> Iterator[LiveServer]:
    from deepdraft.llm import embedded
    from deepdraft.server.embedded_model import model_server_app

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEEPDRAFT_MODELS", str(REAL_MODELS))
        try:
            embedded.llama_module()
            models.resolve_model(None)
        except Exception as exc:  # same rule as the embedded end-to-end test
            message = f"embedded model not set up ({exc}); run `deepdraft setup`"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        app = model_server_app(None, host="127.0.0.1", context=512)
    with LiveServer(app) as live:
        yield live


@pytest.mark.slow
@pytest.mark.embedded
def test_a_foreign_origin_gets_no_cors_and_cannot_send_changes(model_server: LiveServer) -> None:
    with model_server.client() as client:
        listed = client.get("/v1/models", headers={"Origin": EVIL})
        assert listed.status_code == 200 and listed.json()["data"][0]["id"] == models.DEFAULT_MODEL
        assert "access-control-allow-origin" not in listed.headers
        preflight = client.options(
            "/v1/chat/completions",
            headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        # A page's fetch() with a text/plain body needs no preflight: refused before the model sees it.
        for headers in ({"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}, {"Origin": EVIL}):
            refused = client.post("/v1/chat/completions", headers=headers, json=CHAT)
            assert refused.status_code == 403, refused.text
            assert "cross-site" in refused.json()["detail"]


@pytest.mark.slow
@pytest.mark.embedded
def test_a_foreign_host_name_is_refused_and_loopback_clients_are_served(model_server: LiveServer) -> None:
    port = model_server.server.config.port
    with model_server.client() as client:
        for path in ("/v1/models", "/docs"):
            assert client.get(path, headers={"Host": f"attacker.example:{port}"}).status_code == 400
        # A client that is not a browser (deepdraft's own, curl, the openai SDK) is served as before.
        reply = client.post("/v1/chat/completions", json=CHAT)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == 1
