"""One section of a finished report and its evidence: the passages its text was written from, the
ones it cites, and the numbers their sources carry in the report's References.

    section_evidence(run_id, "3.2") → SectionEvidence

"Written from" is what the run's journal says: the passages of the last search for the section
(its `evidence_added` event) before its text was last written (its `node_written` event), which
are the passages the write prompt showed. "Cites" is the section's text as the run's latest state
holds it, verification repairs included, read through the same document every export renders. A
passage can be both; a cited one the last search did not bring (a repair quoted another) is listed
too. The REST API and the web page's "show its evidence" answer from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepdraft.errors import StoreError
from deepdraft.export.document import ReferenceEntry, ReportDocument, Section
from deepdraft.policy.sections import locate
from deepdraft.run.reports import ReportNotReady
from deepdraft.run.runs import RunEvent, Runs


@dataclass(frozen=True)
class EvidencePassage:
    key: str
    """The passage's citation key in the run."""
    text: str
    title: str
    """The title of the document it comes from."""
    location: str
    """That document's path or URL."""
    page: int | None
    number: int | None
    """Its source's number in the References (None: the report cites nothing of that source)."""
    label: str | None
    """How the report cites that source ("[3]", or "Smith 2020" in an author-year style)."""
    cited: bool
    """The section's text cites this passage."""
    written_from: bool
    """The section's text was last written from this passage (it was in that write's evidence)."""


@dataclass(frozen=True)
class SectionEvidence:
    run_id: str
    number: str
    """The section's number as the report prints it ("3.2")."""
    position: str
    title: str
    written: bool
    passages: list[EvidencePassage]
    """Those it was written from, in the order the search ranked them, then any other it cites."""


def section_evidence(run_id: str, section: str) -> SectionEvidence:
    """The evidence of `section` ("3.2" or "section-3.2") of a finished run's report.

    `ReportNotReady` while the run has no report (or a command on it is under way), a `UserError`
    for a name that is not a section number and `SectionNotFound` for one the report lacks.
    """
    with Runs.open() as runs:
        info = runs.get(run_id)
        if info.recorded_status != "finished":
            raise ReportNotReady(f"run {info.id} has no report to show the evidence of (it is {info.status})")
        outline = runs.outline(info.id)
        if outline is None:
            raise StoreError(f"run {info.id} is marked finished but its last checkpoint has no outline")
        located = locate(outline, section, info.id)
        document = runs.report_document(info.id)
        events = runs.events(info.id)
    part = next(item for item in document.walk() if item.position == located.position)
    return SectionEvidence(
        run_id=info.id,
        number=part.number,
        position=part.position,
        title=part.title,
        written=part.written,
        passages=_passages(document, part, _written_from(events, part.position)),
    )


def _written_from(events: list[RunEvent], position: str) -> list[str]:
    """The keys of the last search for `position` before its text was last written ([] if never)."""
    keys: list[str] = []
    searched: list[str] = []
    for event in events:
        if event.kind == "evidence_added" and event.payload.get("target") == position:
            searched = [str(key) for key in event.payload.get("keys", [])]
        elif event.kind == "node_written" and event.payload.get("position") == position:
            keys = searched
    return keys


def _passages(document: ReportDocument, part: Section, written_from: list[str]) -> list[EvidencePassage]:
    cited = list(dict.fromkeys(key for sentence in part.sentences for key in sentence.keys))
    by_source: dict[str, ReferenceEntry] = {entry.doc_id: entry for entry in document.references}
    passages = []
    for key in dict.fromkeys([*written_from, *cited]):
        if key not in document.registry:
            continue  # a key the model made up: the report shows no citation for it either
        item = document.registry[key]
        entry = by_source.get(item.source.doc_id)
        passages.append(
            EvidencePassage(
                key=key,
                text=item.text,
                title=item.source.title,
                location=item.source.location,
                page=item.source.page,
                number=entry.number if entry is not None else None,
                label=entry.label if entry is not None else None,
                cited=key in cited,
                written_from=key in written_from,
            )
        )
    return passages


__all__ = ["EvidencePassage", "SectionEvidence", "section_evidence"]
