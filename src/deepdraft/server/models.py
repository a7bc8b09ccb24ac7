"""The REST API's request and response bodies: pydantic models, so `/openapi.json` documents each route."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deepdraft.policy.asks import MAX_QUESTION_CHARS
from deepdraft.policy.sections import MAX_INSTRUCTIONS, SECTION_PATTERN
from deepdraft.protocol.actions import SUBSECTIONS_RANGE
from deepdraft.run.manager import Status
from deepdraft.settings import Depth, PolicyName, duration_seconds


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateRun(_Body):
    question: str = Field(min_length=1, max_length=4000)
    kb: str | None = Field(None, description="A knowledge base name (default: `default`, else `demo`).")
    depth: Depth | None = None
    policy: PolicyName | None = None
    model: str | None = Field(None, description="Model name on the server's LLM endpoint.")
    max_steps: int | None = Field(None, ge=1, le=10_000)
    max_expansions: int | None = Field(None, ge=0, le=100)
    max_tokens_total: int | None = Field(None, ge=1)
    max_time: float | None = Field(
        None, gt=0, description='Wall-time budget in seconds, or text such as "90s", "30m", "2h".'
    )
    language: str | None = Field(None, max_length=40)
    review_outline: bool = Field(False, description="Pause after the first outline for the user to edit it.")

    @field_validator("max_time", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return duration_seconds(value)


class ResumeRun(_Body):
    review_outline: bool = False
    force: bool = Field(
        False, description="Write the report even over a hand edit of report.md (kept as a version first)."
    )


SectionName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=40,
        pattern=SECTION_PATTERN,
        description='A section as the report numbers it ("3", "3.2") or by position ("section-3.2").',
        examples=["3.2"],
    ),
]
Instructions = Annotated[
    str,
    Field(
        max_length=MAX_INSTRUCTIONS,
        description="What you want of this part; shown to the model in the command's prompts.",
    ),
]
CommandSteps = Annotated[
    int | None,
    Field(
        ge=1, le=10_000, description="Most LLM actions the command may take (default: the run's max_steps)."
    ),
]
Force = Annotated[
    bool,
    Field(
        description="Go on even over a hand edit of the section in report.md "
        "(the edit is kept as a version first)."
    ),
]


class DeepenSection(_Body):
    """Split a section of the finished report into subsections, research and write them."""

    section: SectionName
    into: int | None = Field(
        None,
        ge=SUBSECTIONS_RANGE[0],
        le=SUBSECTIONS_RANGE[1],
        description="Exactly this many subsections (default: the model's choice within the run's bounds).",
    )
    instructions: Instructions = ""
    max_steps: CommandSteps = None
    force: Force = False


class RewriteSection(_Body):
    """Search again for a section of the finished report and write it again."""

    section: SectionName
    instructions: Instructions = ""
    max_steps: CommandSteps = None
    force: Force = False


class RecheckSection(_Body):
    """Verify the citations of one section of the finished report (or all of it) again, with repair."""

    section: SectionName | None = Field(None, description="The section to check (default: the whole report).")
    force: Force = False


class RefreshRun(_Body):
    """Write again the sections of the finished report that its knowledge base's changes concern."""

    max_steps: CommandSteps = None
    force: Force = False


class AddSource(_Body):
    """Add a web page to the run's knowledge base and write one section again with it (a file is
    sent as a multipart upload instead, with these as form fields)."""

    to: SectionName = Field(description='The section to write again with it ("3", "3.2", "section-3.2").')
    url: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        description="A page to fetch (only for a run that uses the web); leave out when uploading a file.",
    )
    instructions: Instructions = ""
    max_steps: CommandSteps = None
    force: Force = False


class RunSummary(BaseModel):
    id: str
    question: str
    status: Status
    policy: str
    steps: int
    max_steps: int
    kb: str | None
    created_at: float
    updated_at: float
    error: str | None


class RunDetail(RunSummary):
    title: str | None
    stop_reason: str
    outline: dict[str, Any] | None
    review: dict[str, Any] | None = Field(description="The outline waiting for review, if any.")
    formats: list[str]


class CommandStarted(RunDetail):
    command: str = Field(description="deepen, rewrite, recheck, add-source or refresh")
    section: str | None = Field(description="The section it works on (none: a recheck of the whole report).")
    events_after: int = Field(
        description="The run's last event before the command: `/events?after=N` streams the command's alone."
    )


class StaleSectionOut(BaseModel):
    section: str = Field(description="The section as the report numbers it (3.2).")
    reason: str = Field(description="Why it is written again, in words.")
    line: str = Field(description='Both in one line, as `deepdraft refresh` prints it ("3.2: …").')


class RefreshPlan(BaseModel):
    run_id: str
    changes: str = Field(description='How the knowledge base changed since the report ("1 document added").')
    stale: list[StaleSectionOut] = Field(description="The sections a refresh would write again, in order.")
    message: str = Field(description="What `deepdraft refresh` would say first, in one line.")


class RefreshStarted(CommandStarted):
    changes: str = Field(description='How the knowledge base changed since the report ("1 document added").')
    stale: list[StaleSectionOut] = Field(description="The sections the refresh writes again, in order.")


class AddSourceStarted(CommandStarted):
    source: str = Field(description="The uploaded file's name, or the page's URL.")
    documents: list[str] = Field(description="The titles of the knowledge base documents it gave.")


class EvidencePassageOut(BaseModel):
    key: str = Field(description="The passage's citation key in the run.")
    text: str
    title: str = Field(description="The title of the document it comes from.")
    location: str = Field(description="That document's path or URL.")
    page: int | None
    number: int | None = Field(
        description="Its source's number in the References (none: the report cites no part of it)."
    )
    label: str | None = Field(description='How the report cites that source ("[3]", or "Smith 2020").')
    cited: bool = Field(description="The section's text cites this passage.")
    written_from: bool = Field(description="The section's text was last written from this passage.")


class SectionEvidenceOut(BaseModel):
    run_id: str
    number: str = Field(description="The section's number as the report prints it (3.2).")
    position: str
    title: str
    written: bool
    passages: list[EvidencePassageOut] = Field(
        description="Those it was written from, in their ranked order, then any other it cites."
    )


class VersionOut(BaseModel):
    number: int
    kind: str = Field(description="What wrote it: research, resumed, export, restore, hand-edit, earlier, …")
    note: str = Field(description="Why it was written, in words.")
    created_at: float
    step: int | None = Field(description="The journal step it was rendered from (none for a hand edit).")
    changed: str = Field(description="What it changed from the version before, in one line.")
    current: bool


class VersionList(BaseModel):
    run_id: str
    versions: list[VersionOut]
    unrecorded_edit: str | None = Field(description="report.md's hand edits that no version holds yet.")


class SectionChangeOut(BaseModel):
    key: str
    change: str = Field(description="added, removed, rewritten or renumbered")
    heading: str
    old_heading: str
    lines: list[str] = Field(description='The changed lines ("-" old, "+" new).')
    sources_added: list[str]
    sources_removed: list[str]


class VersionDiff(BaseModel):
    run_id: str
    older: int
    newer: int
    summary: str
    sections: list[SectionChangeOut]
    sources_added: list[str]
    sources_removed: list[str]


class AskQuestion(_Body):
    question: str = Field(
        min_length=1, max_length=MAX_QUESTION_CHARS, description="A follow-up question on the finished run."
    )


class AskAnswer(BaseModel):
    """A follow-up question and its answer, cited in the report's numbering."""

    run_id: str
    question: str
    answer: str = Field(description="Markdown; sources the report does not cite are listed under it.")
    note: str = Field(description='Why there is no answer ("" when there is one).')
    new_sources: list[str] = Field(description="The entries of the sources only the answer cites.")
    section: str | None = Field(description="The section the answer became (`ask --into-report`).")
    asked_at: float
    answered_at: float


class CancelResult(BaseModel):
    id: str
    status: str


class OutlineSection(_Body):
    title: str = Field(min_length=1, max_length=300)
    plan: str = Field(min_length=1, max_length=2000)


class OutlineReview(_Body):
    """Either accept the proposed outline as it is, or send the edited one (3–12 sections)."""

    accept: bool = False
    title: str | None = Field(None, max_length=300)
    sections: list[OutlineSection] | None = Field(None, max_length=50)


class KBSummary(BaseModel):
    name: str
    documents: int | None = None
    passages: int | None = None


class IngestJobOut(BaseModel):
    id: str
    kb: str
    files: list[str]
    status: str
    message: str
    progress: list[str]
    summary: dict[str, Any] | None
    created_at: float
    finished_at: float | None


class PassageOut(BaseModel):
    text: str
    title: str
    location: str
    doc_id: str
    page: int | None
    score: float


class Health(BaseModel):
    version: str
    workers: int
    token_required: bool
    formats: list[str]
