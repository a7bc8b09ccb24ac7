"""deepdraft: local-first deep research that writes a cited report while its outline grows.

The public API is what `__all__` lists; everything else is internal and may change.
"""

from deepdraft._version import __version__
from deepdraft.api import aresearch, aresume, research, resume
from deepdraft.config import load_settings
from deepdraft.errors import (
    ConfigError,
    DeepdraftError,
    KnowledgeBaseError,
    LLMError,
    RunFailed,
    RunNotFound,
    UserError,
)
from deepdraft.events import Event
from deepdraft.llm.scripted import FunctionLLM, ScriptedLLM
from deepdraft.ports import LLM, ChatRequest, ChatResult, Passage, Retriever, Source, Usage
from deepdraft.run.runner import Report
from deepdraft.settings import Settings

__all__ = [
    "LLM",
    "ChatRequest",
    "ChatResult",
    "ConfigError",
    "DeepdraftError",
    "Event",
    "FunctionLLM",
    "KnowledgeBaseError",
    "LLMError",
    "Passage",
    "Report",
    "Retriever",
    "RunFailed",
    "RunNotFound",
    "ScriptedLLM",
    "Settings",
    "Source",
    "Usage",
    "UserError",
    "__version__",
    "aresearch",
    "aresume",
    "load_settings",
    "research",
    "resume",
]
