"""PDF export: WeasyPrint lays out the HTML export (same content, same styles, `@page` rules).

WeasyPrint is an optional extra (`deepdraft[export]`) and needs the system's Pango at run time.
Both failures are user-fixable, so they become one `UserError` line that names what to install:
the Python package when the import fails with ImportError, the system libraries when it fails
with OSError (how WeasyPrint reports a missing Pango/HarfBuzz shared library).

CJK text renders when a CJK font is installed (e.g. Debian's fonts-noto-cjk); the HTML's font
stack names the usual ones. Without such a font the characters come out as boxes, which is a
font problem of the machine, not a failure of the export, so it is not an error.
"""

from __future__ import annotations

from typing import Any

from deepdraft.errors import UserError
from deepdraft.export import html
from deepdraft.export.document import ReportDocument

MISSING_PACKAGE = 'PDF export needs WeasyPrint: pip install "deepdraft[export]" (or: pip install weasyprint)'
MISSING_LIBRARIES = (
    "PDF export needs WeasyPrint's system libraries ({error}): "
    "apt install libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 (macOS: brew install pango)"
)


def render(document: ReportDocument) -> bytes:
    weasyprint = load_weasyprint()
    pdf: bytes = weasyprint.HTML(string=html.render(document)).write_pdf()
    return pdf


def load_weasyprint() -> Any:
    """The weasyprint module, or a `UserError` saying what to install."""
    try:
        import weasyprint
    except ImportError as exc:
        raise UserError(MISSING_PACKAGE) from exc
    except OSError as exc:
        raise UserError(MISSING_LIBRARIES.format(error=str(exc).splitlines()[0][:120])) from exc
    return weasyprint
