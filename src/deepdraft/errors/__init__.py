"""The errors deepdraft raises, split by who has to act.

    DeepdraftError
     ├── UserError              the user must change something: a flag, a file, the config
     │    ├── ConfigError       bad or unknown settings, no LLM configured
     │    ├── KnowledgeBaseError missing, empty or unreadable corpus
     │    ├── WebSearchError    the web search provider is unreachable, refuses the key or misreplies
     │    ├── RunNotFound       an unknown run id
     │    ├── RunAlreadyFinished resuming a run that has its report already
     │    ├── ReportEdited      a command would overwrite what the user edited in report.md
     │    ├── SectionNotFound   a section number the run's report does not have
     │    ├── CommandRefused    a command on a report the run or the section cannot take now
     │    └── VersionNotFound   a report version the run does not have
     ├── LLMError               the LLM endpoint failed us
     │    ├── LLMUnreachable    connection refused, DNS, TLS
     │    ├── LLMTimeout        no answer in time (after retries)
     │    ├── LLMRefused        4xx: auth, unknown model, request rejected
     │    ├── LLMContextOverflow the prompt is longer than the model's context window
     │    ├── LLMServerError    5xx or 429 after every retry
     │    ├── LLMBudgetExhausted the run's token cap is spent (the policy finishes the report)
     │    └── LLMBadResponse    a reply that is not a chat completion
     ├── StoreError             the run journal could not be read or written
     ├── RunFailed              the policy could not go on (e.g. no valid outline)
     └── RunCancelled           someone asked the run to stop (it stays resumable)

The CLI turns every `DeepdraftError` into one line and an exit code; anything else is a bug
and shows a traceback. A model reply that fails validation is *not* an exception: the policy
feeds the reason back to the model (see `actions.py`).
"""

from __future__ import annotations


class DeepdraftError(Exception):
    """Base class of every error deepdraft raises on purpose."""

    exit_code = 1


class UserError(DeepdraftError):
    exit_code = 2


class ConfigError(UserError):
    pass


class KnowledgeBaseError(UserError):
    pass


class WebSearchError(UserError):
    """The web search provider could not be used; the message says what to check."""


class RunNotFound(UserError):
    pass


class RunAlreadyFinished(UserError):
    """A finished run was asked to resume: there is nothing left to do (the CLI says so, exit 0)."""


class ReportEdited(UserError):
    """report.md holds the user's own edit where a command would write; `--force` keeps the edit
    as a report version and goes on (see `run.versions.ensure_unedited`)."""


class VersionNotFound(UserError):
    """A report version number the run does not have (the message names those it has)."""


class SectionNotFound(UserError):
    """A section the run's outline does not have (the message names the numbers it has)."""


class CommandRefused(UserError):
    """A command on a finished run's report (deepen, rewrite, recheck) that cannot be given now:
    the run is being driven, is not finished, or stopped during another command; or the section
    cannot take it (already split, at the deepest level). Nothing was changed."""


class LLMError(DeepdraftError):
    exit_code = 3


class LLMUnreachable(LLMError):
    pass


class LLMTimeout(LLMError):
    pass


class LLMRefused(LLMError):
    pass


class LLMContextOverflow(LLMRefused):
    """The prompt did not fit the model's context; the policy retries with smaller prompts."""


class LLMServerError(LLMError):
    pass


class LLMBudgetExhausted(LLMError):
    """The configured token cap is spent; the policy stops and renders what it has."""


class LLMBadResponse(LLMError):
    pass


class StoreError(DeepdraftError):
    exit_code = 4


class RunFailed(DeepdraftError):
    exit_code = 5


class RunCancelled(DeepdraftError):
    """The run was cancelled between two actions; `deepdraft resume` continues it."""

    exit_code = 130
