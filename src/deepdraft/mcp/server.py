"""deepdraft as an MCP server: other agents (Claude Desktop, IDE agents) call deep research as a tool.

Tools: `deep_research` (question, kb, depth → the report's Markdown and its run id, with progress
notifications while it runs), `search_kb`, `list_runs`, `get_report`, the commands on one section
of a finished report: `deepen_section`, `rewrite_section`, `recheck_section`, `add_source`, and
`refresh_report` for the whole of it (the run goes on, as `deepdraft deepen` does; the call returns
the new report version), and `ask_run` (a follow-up question on a finished run, answered in its
report's numbering). Resources: each finished
run's report at ``deepdraft://runs/{run_id}/report``. Transports: stdio (the client starts
``deepdraft mcp``) and streamable HTTP on loopback (``deepdraft mcp --transport http``), under the
same access rules as the REST server (`deepdraft.server.security`).

Trade-offs: a research run takes minutes, and MCP tool calls are plain request/response, so
`deep_research` holds the call open and reports progress (one notification per finished action,
`progress`/`total` in actions) rather than returning a handle to poll. The run is journaled like
any other: if the client gives up, the run is cancelled before its next action and can be resumed
with `deepdraft resume`. Runs are driven in a worker thread so the event loop keeps answering
other requests. Unlike the REST server, `kb` may also be a folder path, and `add_source` a file
path: an MCP client runs on the user's own machine, with the user's rights, exactly like the CLI
(and the HTTP transport never listens beyond loopback). A URL is fetched only for a run that uses
the web, as `deepdraft add-source` does.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any, Literal

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import AfterValidator, BaseModel, Field, ValidationError
from starlette.applications import Starlette

from deepdraft._version import __version__
from deepdraft.errors import CommandRefused, DeepdraftError
from deepdraft.events import ActionFinished, Event, RunStarted
from deepdraft.http import security
from deepdraft.policy.asks import MAX_QUESTION_CHARS
from deepdraft.policy.sections import MAX_INSTRUCTIONS, SECTION_PATTERN, SectionCommand
from deepdraft.ports import LLM
from deepdraft.protocol.actions import SUBSECTIONS_RANGE
from deepdraft.retrieval.kb import lookup
from deepdraft.run import history, reports, runner
from deepdraft.run.answers import Answer
from deepdraft.run.manager import LLMFactory, settings_for_run
from deepdraft.run.runs import Runs, is_active
from deepdraft.settings import Depth, Settings

INSTRUCTIONS = (
    "deepdraft writes long, cited research reports from the user's own documents. Use deep_research "
    "for a question that needs a structured report (it takes minutes and reports progress); "
    "search_kb for a quick look-up of passages; list_runs and get_report for earlier reports; "
    "deepen_section, rewrite_section, recheck_section and add_source improve one section of a finished "
    "report; refresh_report writes again the sections its knowledge base's changes concern; ask_run "
    "answers a follow-up question on one."
)


class ResearchResult(BaseModel):
    run_id: str
    title: str
    stop_reason: str
    report_path: str | None
    markdown: str


class PassageHit(BaseModel):
    text: str
    title: str
    location: str
    page: int | None
    score: float


class AskResult(BaseModel):
    run_id: str
    question: str
    answer: str
    """Markdown citing in the report's numbering, the sources the report lacks listed under it."""
    note: str
    new_sources: list[str]


class CommandResult(BaseModel):
    run_id: str
    command: str
    section: str | None
    version: int
    """The report version the command wrote (the current one)."""
    changed: str
    """What that version changed from the one before, in one line."""
    outcome: str
    """Why the command did not do all it was asked (a refused split, a spent budget); "" when it did."""
    reasons: list[str] = []
    """refresh: each section it wrote again and why ("3.2: …"), as `deepdraft refresh` prints them."""
    title: str
    markdown: str


class RunEntry(BaseModel):
    id: str
    status: str
    question: str
    steps: int
    created_at: float
    has_report: bool


# What each tool accepts. The bounds are part of each tool's input schema, so a client sees them
# before it calls; a call outside them is an error, never quietly clamped to something else.
def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


Question = Annotated[str, Field(min_length=1, max_length=4000), AfterValidator(_not_blank)]
KBName = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_not_blank)]
Query = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_not_blank)]
FollowUp = Annotated[str, Field(min_length=1, max_length=MAX_QUESTION_CHARS), AfterValidator(_not_blank)]
RUN_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
RunId = Annotated[str, Field(min_length=1, max_length=200, pattern=RUN_ID_PATTERN)]
MAX_HITS = 50
MAX_RUNS = 500
SectionName = Annotated[str, Field(min_length=1, max_length=40, pattern=SECTION_PATTERN)]
Instructions = Annotated[str, Field(max_length=MAX_INSTRUCTIONS)]
Subsections = Annotated[int, Field(ge=SUBSECTIONS_RANGE[0], le=SUBSECTIONS_RANGE[1])]
CommandSteps = Annotated[int, Field(ge=1, le=10_000)]
SourceRef = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_not_blank)]


class ValidatingServer(MCPServer):
    """An MCP server that refuses arguments a tool does not take, and says in one line what is wrong.

    The SDK validates the declared arguments but drops unknown ones silently (a client that sends
    `top_k` for `k` would get the default without knowing), and reports a violated bound as
    pydantic's multi-line text with a link. Both become one sentence that names the argument.
    """

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        tool = self._tool_manager.get_tool(name)
        if tool is not None:
            known = set(tool.parameters.get("properties", {}))
            unknown = sorted(set(arguments) - known)
            if unknown:
                raise ToolError(
                    f"{name} takes no argument {', '.join(map(repr, unknown))}; "
                    f"its arguments are {', '.join(sorted(known))}"
                )
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(argument_problems(name, exc.__cause__)) from exc.__cause__
            raise


def argument_problems(tool: str, error: ValidationError) -> str:
    """The validation errors of a tool call as one line, e.g. "invalid arguments for search_kb: k: input
    should be greater than or equal to 1 (got -1)"."""
    problems = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "arguments"
        message = problem["msg"][0].lower() + problem["msg"][1:]
        given = "" if problem["type"] == "missing" else f" (got {_short(problem.get('input'))})"
        problems.append(f"{where}: {message}{given}")
    return f"invalid arguments for {tool}: " + "; ".join(problems)


def _short(value: Any) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def build(settings: Settings, *, llm_factory: LLMFactory | None = None) -> MCPServer:
    """The MCP server over these settings; `llm_factory` replaces the configured LLM (tests)."""
    server: MCPServer = ValidatingServer("deepdraft", instructions=INSTRUCTIONS, version=__version__)

    @server.tool()
    async def deep_research(
        question: Question, ctx: Context, kb: KBName | None = None, depth: Depth | None = None
    ) -> ResearchResult:
        """Research a question in a knowledge base and write a cited report (Markdown).

        kb: a knowledge base name or a folder of documents (default: the `default` KB, else `demo`).
        depth: quick, standard or deep (default: quick on the embedded model, else standard).
        """
        run_settings = settings_for_run(settings, {"research": {"depth": depth}})
        llm = llm_factory(run_settings) if llm_factory is not None else None
        return await _research(question, ctx, kb, run_settings, llm)

    @server.tool()
    async def search_kb(
        kb: KBName, query: Query, k: Annotated[int, Field(ge=1, le=MAX_HITS)] = 5
    ) -> list[PassageHit]:
        """The k best passages (1 to 50) for a query in a knowledge base (by name), best first."""
        try:
            passages = await anyio.to_thread.run_sync(lookup.search, kb, query, k)
        except DeepdraftError as exc:
            raise ToolError(str(exc)) from exc
        return [PassageHit.model_validate(lookup.passage_json(p)) for p in passages]

    @server.tool()
    async def list_runs(limit: Annotated[int, Field(ge=1, le=MAX_RUNS)] = 20) -> list[RunEntry]:
        """Research runs (at most `limit`, 1 to 500), newest first, with their status and whether a
        report exists."""
        return await anyio.to_thread.run_sync(_run_entries, limit)

    @server.tool()
    async def get_report(run_id: RunId, format: Literal["md", "html", "json", "bibtex", "csl"] = "md") -> str:
        """A finished run's report as text: md (default), html, json, bibtex or csl."""
        try:
            found = await anyio.to_thread.run_sync(reports.report, run_id, format)
        except DeepdraftError as exc:
            raise ToolError(str(exc)) from exc
        return found.content.decode("utf-8")

    async def section_command(
        ctx: Context, run_id: str, command: SectionCommand, force: bool
    ) -> CommandResult:
        return await _section_command(ctx, run_id, command, force, settings, llm_factory)

    @server.tool()
    async def deepen_section(
        run_id: RunId,
        section: SectionName,
        ctx: Context,
        into: Subsections | None = None,
        instructions: Instructions = "",
        force: bool = False,
    ) -> CommandResult:
        """Split one section of a finished report into subsections, research and write them; the
        report is finished again as a new version (takes minutes, reports progress).

        section: as the report numbers it ("3", "3.2") or by position ("section-3.2").
        into: exactly this many subsections (2 to 7; default: the model's choice).
        instructions: what the user wants of this part, shown to the model.
        force: go on over a hand edit of that section in report.md (kept as a version first).
        """
        command = SectionCommand("deepen", section, into, instructions)
        return await section_command(ctx, run_id, command, force)

    @server.tool()
    async def rewrite_section(
        run_id: RunId,
        section: SectionName,
        ctx: Context,
        instructions: Instructions = "",
        force: bool = False,
    ) -> CommandResult:
        """Search again for one section of a finished report and write it again; the report is
        finished again as a new version. Arguments as for deepen_section."""
        command = SectionCommand("rewrite", section, None, instructions)
        return await section_command(ctx, run_id, command, force)

    @server.tool()
    async def recheck_section(
        run_id: RunId, ctx: Context, section: SectionName | None = None, force: bool = False
    ) -> CommandResult:
        """Verify the citations of one section of a finished report (default: all of it) again, with
        repair of the claims its sources do not support; the report is finished again."""
        return await section_command(ctx, run_id, SectionCommand("recheck", section), force)

    @server.tool()
    async def add_source(
        run_id: RunId,
        source: SourceRef,
        to: SectionName,
        ctx: Context,
        instructions: Instructions = "",
        force: bool = False,
    ) -> CommandResult:
        """Add a document to a finished run's knowledge base and write one section again with its
        passages; the report is finished again as a new version (takes minutes, reports progress).

        source: a file on this machine, or a URL when the run uses the web.
        to: the section to write again, as the report numbers it ("3.2") or by position.
        instructions, force: as for deepen_section.
        """
        command = SectionCommand("add-source", to, None, instructions, source=source)
        return await section_command(ctx, run_id, command, force)

    @server.tool()
    async def refresh_report(
        run_id: RunId, ctx: Context, max_steps: CommandSteps | None = None, force: bool = False
    ) -> CommandResult:
        """Write again the sections of a finished report that its knowledge base's changes concern
        (documents added, changed or removed since); `reasons` says which and why. An error, saying
        why, when there is nothing to refresh.

        max_steps: most LLM actions it may take (default: the run's own).
        force: go on over hand edits of those sections in report.md (kept as a version first).
        """
        command = SectionCommand("refresh", None, max_steps=max_steps)
        return await section_command(ctx, run_id, command, force)

    @server.resource("deepdraft://runs/{run_id}/report", mime_type="text/markdown")
    async def report_resource(run_id: str) -> str:
        """The Markdown report of a finished run."""
        if not re.fullmatch(RUN_ID_PATTERN, run_id) or len(run_id) > 200:
            raise ResourceError(f"not a run id: {_short(run_id)} (letters, digits, - and _ only)")
        try:
            found = await anyio.to_thread.run_sync(reports.report, run_id, "md")
        except DeepdraftError as exc:
            raise ResourceError(str(exc)) from exc
        return found.content.decode("utf-8")

    _add_ask_tool(server, settings, llm_factory)
    return server


def _add_ask_tool(server: MCPServer, settings: Settings, llm_factory: LLMFactory | None) -> None:
    @server.tool()
    async def ask_run(run_id: RunId, question: FollowUp) -> AskResult:
        """Answer a follow-up question on a finished run from the passages it gathered and a fresh
        search of its knowledge base. Citations use the report's numbers; sources the report does not
        cite take the next numbers and are listed under the answer. The report is not changed."""

        def work() -> Answer:
            llm = None
            if llm_factory is not None:
                with Runs.open() as runs:
                    llm = llm_factory(runs.get(run_id).settings)
            return runner.ask(run_id, question, settings, llm=llm)

        try:
            answer = await anyio.to_thread.run_sync(work)
        except DeepdraftError as exc:
            raise ToolError(str(exc)) from exc
        return AskResult(
            run_id=answer.run_id,
            question=answer.question,
            answer=answer.markdown,
            note=answer.note,
            new_sources=answer.sources,
        )


class _Progress:
    """A run's finished actions as MCP progress notifications; a client that is gone cancels the
    run before its next action (it stays resumable)."""

    def __init__(self, ctx: Context, total: int) -> None:
        self.ctx, self.total = ctx, total
        self.cancel = threading.Event()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.total = event.max_steps or self.total
        if isinstance(event, ActionFinished):
            record = event.record
            verdict = "" if record.valid else " (refused, asking again)"
            message = f"step {record.step}: {record.action} {record.target}{verdict}"
            try:
                anyio.from_thread.run(self.ctx.report_progress, record.step, self.total, message)
            except Exception:  # the client is gone: stop before the next action (resumable)
                self.cancel.set()


async def _driven(work: Callable[[], runner.Report], progress: _Progress) -> runner.Report:
    """`work` in a worker thread, so the event loop keeps answering; its errors as one-line tool errors."""
    try:
        return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    except DeepdraftError as exc:
        raise ToolError(str(exc)) from exc
    except anyio.get_cancelled_exc_class():
        progress.cancel.set()  # the client gave up: stop before the next action; the run stays resumable
        raise


async def _research(
    question: str, ctx: Context, kb: str | None, settings: Settings, llm: LLM | None
) -> ResearchResult:
    """One research run in a worker thread, its actions reported to the client as progress."""
    progress = _Progress(ctx, settings.research.max_steps)

    def work() -> runner.Report:
        return runner.start(question, settings, kb=kb, llm=llm, on_event=progress, cancel=progress.cancel)

    report = await _driven(work, progress)
    return ResearchResult(
        run_id=report.run_id,
        title=report.title,
        stop_reason=report.stop_reason,
        report_path=str(report.path) if report.path else None,
        markdown=report.markdown,
    )


async def _section_command(
    ctx: Context,
    run_id: str,
    command: SectionCommand,
    force: bool,
    settings: Settings,
    llm_factory: LLMFactory | None,
) -> CommandResult:
    """A command on a finished run's report, driven here like `deepdraft deepen` (see
    `runner.run_command`), its actions reported as progress; returns the version it wrote."""
    progress = _Progress(ctx, settings.research.max_steps)
    reasons: list[str] = []

    def work() -> runner.Report:
        nonlocal command
        with Runs.open() as runs:
            record = runs.get(run_id)
        # Refused before a model is built: a busy run, a missing section, a hand edit in the way.
        runner.ensure_commandable(record.id, command, force=force)
        if command.command == "refresh":  # found here to say which sections and why
            findings = runner.find_stale(record.id, settings)
            if not findings.stale:
                raise CommandRefused(runner.nothing_to_refresh(record.id, findings))
            command = replace(command, stale=tuple(findings.stale))
            reasons.extend(stale.describe() for stale in findings.stale)
        llm = llm_factory(record.settings) if llm_factory is not None else None
        return runner.run_command(
            record.id, command, settings, llm=llm, on_event=progress, cancel=progress.cancel, force=force
        )

    report = await _driven(work, progress)
    listed = await anyio.to_thread.run_sync(history.listing, report.run_id)
    latest = listed.entries[-1]
    return CommandResult(
        run_id=report.run_id,
        command=command.command,
        section=command.section,
        version=latest.version.number,
        changed=latest.changed,
        outcome=report.command_outcome,
        reasons=reasons,
        title=report.title,
        markdown=report.markdown,
    )


def _run_entries(limit: int) -> list[RunEntry]:
    with Runs.open() as runs:
        records = runs.all(limit)
    return [
        RunEntry(
            id=r.id,
            # Like `deepdraft runs`, and a run recorded but never started by a dead process too.
            status="interrupted" if r.recorded_status == "created" and not is_active(r.id) else r.status,
            question=r.question,
            steps=r.steps,
            created_at=r.created_at,
            has_report=bool(r.report_path),
        )
        for r in records
    ]


def http_app(
    settings: Settings, *, host: str = "127.0.0.1", llm_factory: LLMFactory | None = None
) -> Starlette:
    """The streamable HTTP endpoint (``/mcp``) under the access rules of `deepdraft serve`.

    The SDK checks Host and Origin itself only when bound to 127.0.0.1, localhost or ::1, and then
    lets a page from any localhost port send requests; `security.protect` in front of it applies
    the same loopback names and cross-site refusal as the REST server, whatever loopback address
    is bound. The endpoint has no token, so it never listens beyond loopback (the CLI refuses).
    """
    app = build(settings, llm_factory=llm_factory).streamable_http_app(host=host)
    security.protect(app, bind_host=host, token=None, how_to_allow="")
    return app


def run(
    settings: Settings,
    *,
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8767,
    llm_factory: LLMFactory | None = None,
) -> None:
    """Serve until the client hangs up (stdio) or Ctrl-C (http)."""
    if transport == "stdio":
        build(settings, llm_factory=llm_factory).run("stdio")
    else:
        import uvicorn

        uvicorn.run(
            http_app(settings, host=host, llm_factory=llm_factory), host=host, port=port, log_level="warning"
        )
