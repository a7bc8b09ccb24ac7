"""An `LLM` that counts what it sends, into the run's egress audit (see `deepdraft.egress`)."""

from __future__ import annotations

from deepdraft.egress import EndpointMeter
from deepdraft.ports import LLM, ChatRequest, ChatResult


class MeteredLLM:
    """An `LLM` that counts every request it passes on (failed ones too: they reached the endpoint).

    It must sit *inside* any cache, so that replies replayed from the journal are not counted.
    """

    def __init__(self, inner: LLM, meter: EndpointMeter) -> None:
        self.inner = inner
        self.meter = meter

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    def complete(self, request: ChatRequest) -> ChatResult:
        sent = sum(len(message.content.encode("utf-8")) for message in request.messages)
        received = 0
        try:
            result = self.inner.complete(request)
            received = len(result.text.encode("utf-8"))
            return result
        finally:
            self.meter.add(1, sent + received)
