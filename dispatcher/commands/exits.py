"""The exit statuses each command documents in its `--help` (shown as the help's epilog)."""

from __future__ import annotations

USAGE = "2 usage or configuration error, or Redis refused DISPATCHER_REDIS_URL"
REDIS_DOWN = "1 Redis did not answer"
CATAPUSH = "1 Catapush refused the call or did not answer"


def epilog(*statuses: str) -> str:
    """One line, `Exit status: 0 ...; 1 ...; 2 ...`, in the order given."""
    return "Exit status: " + "; ".join(statuses) + "."


ENQUEUE = epilog("0 every line enqueued", "1 a line was refused, or " + REDIS_DOWN[2:], USAGE)
WORKER = epilog(
    "0 stopped by SIGTERM or SIGINT after draining",
    "2 a setting, Redis or Catapush refused what the worker was configured with",
)
SANDBOX = epilog("0 stopped", "1 cannot listen on the address")
SERVE = epilog(
    "0 stopped by SIGTERM or SIGINT",
    "1 cannot listen on the address",
    "2 a setting is missing or malformed (DISPATCHER_API_TOKENS needed off loopback)",
)
DEMO = epilog(
    "0 every accepted intent reached an outcome",
    "1 some did not before the deadline (the reason is printed)",
)
STATUS = epilog(
    "0 the intent is known (without ID: the overview was read)",
    "1 nothing is known of it, or " + REDIS_DOWN[2:],
    USAGE,
)
CANCEL = epilog(
    "0 every intent cancelled (for a split one: its unsent parts)",
    "1 an intent went out already or was being sent, or " + REDIS_DOWN[2:],
    USAGE,
)
DLQ_LIST = epilog("0 listed", REDIS_DOWN, USAGE)
DLQ_SHOW = epilog("0 shown", "1 no such dead letter, or " + REDIS_DOWN[2:], USAGE)
DLQ_REPLAY = epilog(
    "0 every entry replayed",
    "1 an id is unknown or an entry holds no intent (the others are still replayed), or "
    + REDIS_DOWN[2:],
    USAGE,
)
DLQ_PURGE = epilog(
    "0 purged (or, with --dry-run, listed)",
    "1 an id is unknown (the others are still purged), the confirmation was declined, or "
    + REDIS_DOWN[2:],
    "2 usage error, no confirmation without a terminal and without --yes, a configuration"
    " error, or Redis refused DISPATCHER_REDIS_URL",
)
USERS = epilog("0 done", "1 no such user, Catapush refused the call or did not answer", USAGE)
USERS_IMPORT = epilog(
    "0 every row created or skipped", "1 a row failed", USAGE, "130 interrupted (run it again)"
)
TOKEN = epilog("0 done", CATAPUSH + ", or " + REDIS_DOWN[2:], USAGE)
EVENTS = epilog("0 done (with --follow: stopped by Ctrl-C)", REDIS_DOWN, USAGE)
ROOT = epilog(
    "0 success",
    "1 an operation failed",
    "2 usage or configuration error (each command's --help says more)",
)
GROUP = "Exit status: each command's --help lists its own."
