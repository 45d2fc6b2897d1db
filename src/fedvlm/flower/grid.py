"""Exchanging messages with the nodes through Flower's Grid, and reading their errors."""

import re
import time

from flwr.app import Message
from flwr.serverapp import Grid

# Grid.send_and_receive of flwr 1.42 pulls replies every 3 s on a deployment; a round
# exchanges messages at least twice (train, evaluate), so fedvlm polls more often.
POLL_SECONDS = 0.2


def push(grid: Grid, messages: list[Message], timeout: float | None):
    """Grid.send_and_receive in two halves: push ``messages`` now, and return the function
    that pulls their replies (every `POLL_SECONDS`, until each has one or ``timeout``
    seconds have passed since the push), so the server can work while the nodes do. The
    function's ``ids`` are the pushed messages' ids, in order."""
    ids = list(grid.push_messages(messages))
    waiting = set(ids)
    deadline = None if timeout is None else time.monotonic() + timeout

    def replies() -> list[Message]:
        pulled_all = []
        while waiting:
            pulled = list(grid.pull_messages(waiting))
            pulled_all += pulled
            waiting.difference_update(m.metadata.reply_to_message_id for m in pulled)
            if waiting and deadline is not None and time.monotonic() >= deadline:
                break
            if waiting:
                time.sleep(POLL_SECONDS)
        return pulled_all

    replies.ids = ids
    return replies


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def short_reason(reason: str) -> str:
    """The part of a node's error that says what went wrong. Flower's reason carries the
    whole remote traceback (through Ray's on the simulation runtime), ending in its own
    wrapper (``ClientAppException ... Message: <the error>``); the cause is that message,
    or else the last ``SomeError: message`` line. A deployed node reports
    ``<class 'X'>:<'message'>``, and a node's worker prefixes ``fedvlm worker at SOCKET:``;
    the cause is the message inside (`fedvlm.errors.error_reason`'s line, as in process)."""
    text = _ANSI.sub("", reason or "")
    wrapped = re.findall(r"occurred\. Message: (.+)", text)
    if wrapped:
        return re.sub(r"'>'?$", "", wrapped[-1].strip()).strip()[:300]  # Ray's repr closes with '>
    bare = re.fullmatch(r"\s*<class '[^']+'>:<'(.*)'>\s*", text, re.DOTALL)
    if bare:
        return re.sub(r"^fedvlm worker at \S+: ", "", bare.group(1).strip())[:300]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Fault)\b[^:]*: \S", line)]
    return (causes[-1] if causes else lines[-1] if lines else "unknown error")[:300]
