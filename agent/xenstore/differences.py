"""Where the embedded xenstored deliberately differs from the C daemon.

The one list of those differences; ``daemon.py`` and the modules it ties
together point here.
"""

from typing import Final

DIFFERENCES: Final = """\
Where the embedded xenstored deliberately differs from C xenstored 4.17:
- Two requests crash the C daemon; we answer them (``c_daemon_crashes``
  counts them). A request answered with a stale errno of 0 (e.g. READ with a
  malformed payload right after a successful WATCH or RM) is left unanswered
  and C aborts on an assertion: we reply EINVAL. Releasing a domain whose
  SET_TARGET target was released before makes C unlink freed memory (SIGSEGV):
  we release it.
- CONTROL logfile/memreport/live-update -f never touch files: logfile and
  print are acknowledged, memreport <file> and live-update -f fail.
- No write rate limiting and no 20 s expiry of undelivered watch events for
  guest connections (both are wall-clock policies of the C daemon).
- A client closing its socket never sets the emulated errno to EBADF (the C
  daemon does so when it reads EOF on a half-closed socket).
- Output counts as delivered when the transport takes it (C: when write()
  took it); this bounds the window in which an identical watch event is
  dropped as a duplicate, and the memory that ``CONTROL quota`` shows.
- Domains whose device model (SET_TARGET) holds a reference are adopted by
  it on death instead of being kept by talloc's reference chain; the visible
  effect (the domain lives on until its device model goes) is the same.
"""
