"""Plain text and Markdown: decoding bytes of an unknown encoding, and telling text from binary.

Encodings are tried in order: BOMs, then UTF-8, then charset-normalizer's guess when it is
trustworthy (a CJK encoding that decodes to CJK text, or a guess backed by language evidence or
enough bytes), then cp1252, then latin-1, which accepts any byte. A wrong guess garbles some letters;
refusing the file would lose all of it. Bytes that decode to mostly control characters are binary.
"""

from __future__ import annotations

import codecs
import re

from deepdraft.core.scripts import CJK, CJK_SYMBOLS
from deepdraft.retrieval.documents.chunking import first_heading
from deepdraft.retrieval.documents.formats.extracted import (
    CONTROL_CHARACTERS,
    Extracted,
    TextBudget,
    Unreadable,
    normalise_newlines,
)
from deepdraft.retrieval.documents.limits import DocumentLimits

_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with the UTF-16 one.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Multi-byte encodings of Chinese, Japanese and Korean, as charset-normalizer names them.
_CJK_ENCODINGS = frozenset(
    {"gb18030", "gbk", "gb2312", "hz", "big5", "big5hkscs", "cp950", "shift_jis", "cp932"}
    | {"euc_jp", "euc_jis_2004", "iso2022_jp", "euc_kr", "cp949", "johab", "iso2022_kr"}
)
_TIE_PREFERENCE = ("cp1252", "gb18030")
_CJK_CHAR = re.compile(f"[{CJK}{CJK_SYMBOLS}]")
_BINARY_CONTROL_SHARE = 0.1  # decoded text with more control characters than this is not text
_SNIFF_BYTES = 64 * 1024


def decode_text(data: bytes) -> str | None:
    """Decode file bytes to text with newlines normalised; None if the bytes look binary."""
    text = _decode(data)
    if text is None:
        return None
    sample = text[:_SNIFF_BYTES]
    if sample and len(CONTROL_CHARACTERS.findall(sample)) > _BINARY_CONTROL_SHARE * len(sample):
        return None
    return normalise_newlines(text)


def _decode(data: bytes) -> str | None:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    if b"\x00" in data[:_SNIFF_BYTES]:
        return _utf16_without_bom(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    guessed = _guess_encoding(data)
    if guessed is not None:
        return guessed
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # total: every byte is a character


def _utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 text of mostly ASCII has a NUL in every other byte; anything else with NULs is binary."""
    sample = data[: _SNIFF_BYTES - _SNIFF_BYTES % 2]
    even, odd = sample[0::2], sample[1::2]
    if not even or not odd:
        return None
    even_nul, odd_nul = even.count(0) / len(even), odd.count(0) / len(odd)
    if odd_nul > 0.3 and even_nul < 0.02:
        encoding = "utf-16-le"
    elif even_nul > 0.3 and odd_nul < 0.02:
        encoding = "utf-16-be"
    else:
        return None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


def _guess_encoding(data: bytes) -> str | None:
    """charset-normalizer's decoding of `data`, when the guess deserves trust; else None.

    On short Western text its pick among single-byte code pages is close to random (cp1006 for a
    French "naïve"), so a guess is taken only with evidence: a CJK encoding that yields CJK text,
    a detected language, or enough bytes for its statistics to mean something. Short Cyrillic or
    Greek text in a legacy code page can therefore come out as cp1252 mojibake; UTF-8 is safe.
    """
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        return None
    encoding = best.encoding
    # Short text fits several code pages equally well (French in cp1250, cp1252, cp1257; Chinese in
    # gb18030 and cp949): ties go to the encodings of the languages deepdraft is made for.
    tied = [m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    encoding = next(
        (name for name in _TIE_PREFERENCE if any(name in m.could_be_from_charset for m in tied)), encoding
    )
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None
    if encoding in _CJK_ENCODINGS:
        non_ascii = [char for char in text[:_SNIFF_BYTES] if ord(char) > 127]
        cjk = sum(1 for char in non_ascii if _CJK_CHAR.match(char))
        return text if non_ascii and cjk >= 0.5 * len(non_ascii) else None
    if best.coherence > 0 or len(data) >= 1024:
        return text
    return None


def extract_text(data: bytes, ocr: bool, limits: DocumentLimits) -> Extracted:
    """Plain text or Markdown, decoded; the title is the first ``# heading`` if there is one."""
    text = decode_text(data)
    if text is None:
        raise Unreadable("binary file, not a document")
    return Extracted(text=TextBudget(limits).spend(text), title=first_heading(text))
