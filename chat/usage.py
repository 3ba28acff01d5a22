"""
Command-line options for the project's programs (the client and
C{chat-check}): Twisted's L{usage.Options}, with a C{--help} that keeps the
paragraphs of the long description instead of running them together.
"""

from __future__ import annotations

import sys
import textwrap
from typing import Optional

from twisted.python import usage

import chat


class ParagraphOptions(usage.Options):
    """
    L{usage.Options} whose long description keeps its paragraphs (split at
    blank lines), each filled to the width, never broken at a hyphen (so
    that options and endpoint examples stay whole), and whose C{--version}
    is chat's.
    """

    def opt_version(self) -> None:
        """
        Print the version and exit.
        """
        print(f"chat {chat.__version__}")
        sys.exit(0)

    def getUsage(self, width: Optional[int] = None) -> str:
        longdesc, self.longdesc = self.longdesc, ""
        try:
            text = super().getUsage(width).rstrip()
        finally:
            self.longdesc = longdesc
        paragraphs = [
            textwrap.fill(" ".join(p.split()), width or 79, break_on_hyphens=False)
            for p in longdesc.split("\n\n")
        ]
        return text + "\n\n" + "\n\n".join(paragraphs) + "\n"
