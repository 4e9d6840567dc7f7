"""The limits on an upstream's response head, measured on the bytes as they arrive.

Owns: MAX_RESPONSE_HEAD_BYTES, MAX_RESPONSE_LINE_BYTES, MAX_RESPONSE_HEADERS, HeadTooLarge (which
limit was passed, and its one text), HeadMeter.
Must not import: anything but the standard library (the upstream pool feeds a HeadMeter before its
parser sees the bytes).

An upstream response whose head passes any limit is refused with 502 (``kind="protocol"``) before
more of it is buffered. Interim (1xx) heads count towards the whole head's size; each head's header
lines are counted on their own.
"""

from __future__ import annotations

MAX_RESPONSE_HEAD_BYTES = 64 * 1024
"""The whole response head, from the status line to the empty line ending it (interim heads before it included)."""
MAX_RESPONSE_LINE_BYTES = 16 * 1024
"""One line of the head (the status line, or a header's name, colon and value), without its line ending."""
MAX_RESPONSE_HEADERS = 256
"""Header lines in one head."""

_TEXTS = {
    "head": f"the upstream's response head is longer than {MAX_RESPONSE_HEAD_BYTES} bytes",
    "line": f"the upstream's response head has a line longer than {MAX_RESPONSE_LINE_BYTES} bytes",
    "headers": f"the upstream's response head has more than {MAX_RESPONSE_HEADERS} header lines",
}


class HeadTooLarge(ValueError):
    """An upstream response head passed one of the limits: ``limit`` is ``head``, ``line`` or ``headers``."""

    def __init__(self, limit: str) -> None:
        super().__init__(_TEXTS[limit])
        self.limit = limit


class HeadMeter:
    """Measures one response's head against the limits, piece by piece, holding no bytes of it.

    ``feed`` every piece as it arrives until ``done``; the pieces after that are body.
    """

    __slots__ = ("done", "_total", "_line", "_cr", "_lines", "_start")

    def __init__(self) -> None:
        self.done = False
        self._total = 0
        """Head bytes seen so far, line endings included."""
        self._line = 0
        """Bytes of the unfinished line so far."""
        self._cr = False
        """Whether the last piece ended in a CR (the start of a CRLF split between pieces)."""
        self._lines = 0
        """Lines finished in the current head (its status line included)."""
        self._start = b""
        """The first bytes of the current head's status line (to tell an interim head)."""

    def feed(self, data: bytes) -> None:
        """Measure ``data``, the next bytes of the response; sets ``done`` once the final head has ended.

        Raises:
            HeadTooLarge: the head passed a limit.
        """
        if self.done:
            return
        if not self._total:  # the common case: a small final head, whole in the first piece
            end = data.find(b"\r\n\r\n", 0, MAX_RESPONSE_LINE_BYTES)
            if end >= 0 and data[9:10] != b"1" and data.find(b"\n\n", 0, end) < 0 and data.find(b"\n\r\n", 0, end + 3) < 0:
                if data.count(b"\n", 0, end) > MAX_RESPONSE_HEADERS:  # the line endings before the last header's
                    raise HeadTooLarge("headers")
                self.done = True
                return
        self._measure(data)

    def _measure(self, data: bytes) -> None:
        pos, size = 0, len(data)
        while pos < size:
            newline = data.find(b"\n", pos)
            end = size if newline < 0 else newline + 1
            if self._total + end - pos > MAX_RESPONSE_HEAD_BYTES:
                raise HeadTooLarge("head")
            self._total += end - pos
            if self._lines == 0 and len(self._start) < 12:
                self._start += data[pos:min(end, pos + 12 - len(self._start))]
            if newline < 0:
                self._line += size - pos
                self._cr = data[-1] == 13
                if self._line > MAX_RESPONSE_LINE_BYTES + 1:  # + 1: the CR of a CRLF may end this piece
                    raise HeadTooLarge("line")
                return
            cr = data[newline - 1] == 13 if newline > pos else self._cr
            length = self._line + newline - pos - cr
            self._line, self._cr, pos = 0, False, end
            if length > MAX_RESPONSE_LINE_BYTES:
                raise HeadTooLarge("line")
            if length > 0 or self._lines == 0:
                self._lines += 1
                if self._lines - 1 > MAX_RESPONSE_HEADERS:
                    raise HeadTooLarge("headers")
                continue
            if self._start[9:10] == b"1" and self._start[9:12] != b"101":  # an interim head ended: the final one follows
                self._lines, self._start = 0, b""
                continue
            self.done = True
            return
