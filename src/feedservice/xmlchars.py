"""Text that XML 1.0 can carry (section 2.2), for every path from a source to a feed file.

C0 controls other than tab, CR and LF, lone surrogates (a JSON or YAML ``"\\ud800"`` escape
decodes to one) and U+FFFE / U+FFFF: left in, one such character made SQLite, hashing (UTF-8
encoding) or the Atom/RSS renderer fail a whole source or feed. ``parse`` scrubs what it reads;
``normalise`` scrubs what nh3 and ``html.unescape`` decode from character references
(``&#x1;``, ``&#xb;``).
"""

from __future__ import annotations

import re

__all__ = ["xml_safe"]

_NOT_XML_CHAR_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` with controls dropped and the other characters XML cannot carry replaced by
    U+FFFD; the same object when there is nothing to change."""
    if _NOT_XML_CHAR_RE.search(text) is None:
        return text
    return _NOT_XML_CHAR_RE.sub(lambda m: "" if m.group() < " " else "\ufffd", text)
