"""Safe output names.

Every name that ends up on the file system (study ids, output file and folder names) goes through
:func:`safe_name`. Names are never taken raw from DICOM tags, folder names or datalists.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["safe_name", "unique_names", "MAX_NAME_LENGTH"]

#: default cap on the length of a name produced by :func:`safe_name`.
MAX_NAME_LENGTH = 96

_DISALLOWED = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")
_UNDERSCORES = re.compile(r"_{2,}")
# Device names Windows refuses as file names (with or without an extension).
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def _clean(text: str, max_length: int) -> str:
    # Transliterate what has an ASCII form (e.g. "Müller" -> "Muller"), drop the rest.
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = _DISALLOWED.sub("_", text)  # also replaces '/', '\\', ':', whitespace, control characters
    text = _DOTS.sub(".", text)  # no '..' anywhere
    text = _UNDERSCORES.sub("_", text)
    text = text.strip("._-")  # no leading dot (hidden file) or dash (looks like an option); no trailing dot
    if len(text) > max_length:
        text = text[:max_length].rstrip("._-")
    if text.split(".", 1)[0].lower() in _WINDOWS_RESERVED:
        text = f"_{text}"[:max_length].rstrip("._-")
    return text


def safe_name(text: object, fallback: str = "study", max_length: int = MAX_NAME_LENGTH) -> str:
    """Turn ``text`` into a file-system-safe, non-empty name.

    The result holds only ASCII letters, digits, ``-``, ``_`` and ``.``; it has no path separator,
    no ``..``, does not start with ``.`` or ``-``, is at most ``max_length`` characters long and is
    never empty (``fallback``, itself made safe, or ``"study"`` is used when nothing is left).
    Unicode letters are transliterated to ASCII where possible (``"Ärztin"`` -> ``"Arztin"``).
    ``safe_name`` is idempotent: ``safe_name(safe_name(x)) == safe_name(x)``.
    """
    max_length = max(int(max_length), 8)
    text = "" if text is None else str(text)
    name = _clean(text, max_length)
    if not name:
        name = _clean(str(fallback), max_length) if fallback is not None else ""
    return name or "study"


def unique_names(names, max_length: int = MAX_NAME_LENGTH) -> list[str]:
    """Make safe names unique (case-insensitively, for case-insensitive file systems) by suffixing
    ``-2``, ``-3``, ... to repeats, in order of appearance."""
    used: set[str] = set()
    out = []
    for name in names:
        base = safe_name(name, max_length=max_length)
        candidate, n = base, 1
        while candidate.lower() in used:
            n += 1
            suffix = f"-{n}"
            candidate = base[: max_length - len(suffix)].rstrip("._-") + suffix
        used.add(candidate.lower())
        out.append(candidate)
    return out
