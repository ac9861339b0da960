"""Typed models of the API's objects, decoded from its camelCase JSON
(docs/openapi.json) into snake_case dataclasses.

Decoding is lenient in one direction only: fields the server adds later are
ignored, and an enum value this SDK does not know stays a plain ``str``, so
an older SDK keeps working against a newer server. A required field that is
missing raises ``KeyError``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Type, TypeVar, Union

__all__ = [
    "SessionState",
    "SeedStatus",
    "Egress",
    "Endpoints",
    "SessionLimits",
    "TokenUsage",
    "UsageTotals",
    "ContainerResources",
    "Session",
    "CreatedSession",
    "CommandAccepted",
    "Interrupted",
    "DeletedSession",
    "FileChange",
    "Diff",
    "DirEntry",
    "Directory",
    "File",
    "PullRequestOptions",
    "PullRequest",
    "PushResult",
    "TurnSummary",
    "Event",
    "OutputEvent",
    "StatusEvent",
    "ErrorEvent",
    "CommandEvent",
    "ClaudeEvent",
    "TurnResultEvent",
    "KeepaliveEvent",
    "PendingPermission",
    "PermissionAnswerEvent",
    "PermissionAnswered",
    "PermissionRequestEvent",
    "UnknownEvent",
    "Logs",
    "Turn",
    "decode_event",
    "decode_path",
]

Json = Mapping[str, Any]
_E = TypeVar("_E", bound=Enum)


class SessionState(str, Enum):
    """The full lifecycle: ``creating → starting → cloning → ready ⇄ busy →
    terminating → terminated``, or ``error``; an idle ``ready`` session may
    be ``sleeping`` (no container; any use wakes it)."""

    CREATING = "creating"
    STARTING = "starting"
    CLONING = "cloning"
    READY = "ready"
    BUSY = "busy"
    SLEEPING = "sleeping"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    ERROR = "error"

    @property
    def is_live(self) -> bool:
        """Whether the session is not over (a sleeping one included)."""
        return self not in (SessionState.TERMINATED, SessionState.ERROR)

    def __str__(self) -> str:
        return self.value


class SeedStatus(str, Enum):
    """The coarse status: ``starting | ready | error | terminated``."""

    STARTING = "starting"
    READY = "ready"
    ERROR = "error"
    TERMINATED = "terminated"

    def __str__(self) -> str:
        return self.value


class Egress(str, Enum):
    """What a session may reach besides the Anthropic and git relays."""

    NONE = "none"
    ALLOWLIST = "allowlist"
    OPEN = "open"

    def __str__(self) -> str:
        return self.value


def _enum(cls: Type[_E], value: Any) -> _E:
    """The member for ``value``, or ``value`` itself (a ``str``) when this
    SDK predates it."""
    try:
        return cls(value)
    except ValueError:
        return value  # type: ignore[no-any-return]


def _opt_int(d: Json, key: str) -> Optional[int]:
    v = d.get(key)
    return None if v is None else int(v)


@dataclass(frozen=True)
class Endpoints:
    """Where a session is reached; ``websocket`` carries a session token
    (``?token=``) that opens that session only, until it expires."""

    websocket: str
    http: str

    @classmethod
    def from_json(cls, d: Json) -> "Endpoints":
        return cls(websocket=d["websocket"], http=d["http"])


@dataclass(frozen=True)
class SessionLimits:
    memory_bytes: int
    cpu: float
    timeout_secs: int
    egress: Egress = Egress.ALLOWLIST
    #: Seconds without use after which the session ends; 0: never; None for
    #: sessions that follow the server's ``--idle-timeout``.
    idle_timeout_secs: Optional[int] = None

    @classmethod
    def from_json(cls, d: Json) -> "SessionLimits":
        return cls(
            memory_bytes=int(d["memoryBytes"]),
            cpu=float(d["cpu"]),
            timeout_secs=int(d["timeoutSecs"]),
            egress=_enum(Egress, d.get("egress", "allowlist")),
            idle_timeout_secs=_opt_int(d, "idleTimeoutSecs"),
        )


@dataclass(frozen=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @classmethod
    def from_json(cls, d: Json) -> "TokenUsage":
        return cls(
            input_tokens=int(d.get("inputTokens", 0)),
            output_tokens=int(d.get("outputTokens", 0)),
            cache_creation_input_tokens=int(d.get("cacheCreationInputTokens", 0)),
            cache_read_input_tokens=int(d.get("cacheReadInputTokens", 0)),
        )


@dataclass(frozen=True)
class UsageTotals:
    """A session's sums over its turns. ``cost_usd`` and the token counts are
    the gateway's measure of the model calls, not what Claude Code printed."""

    turns: int = 0
    errored_turns: int = 0
    cost_usd: float = 0.0
    duration_ms: int = 0
    num_turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @classmethod
    def from_json(cls, d: Json) -> "UsageTotals":
        return cls(
            turns=int(d.get("turns", 0)),
            errored_turns=int(d.get("erroredTurns", 0)),
            cost_usd=float(d.get("costUsd", 0.0)),
            duration_ms=int(d.get("durationMs", 0)),
            num_turns=int(d.get("numTurns", 0)),
            input_tokens=int(d.get("inputTokens", 0)),
            output_tokens=int(d.get("outputTokens", 0)),
            cache_creation_input_tokens=int(d.get("cacheCreationInputTokens", 0)),
            cache_read_input_tokens=int(d.get("cacheReadInputTokens", 0)),
        )


@dataclass(frozen=True)
class ContainerResources:
    """The live container's resource use when the status was read."""

    cpu_percent: float
    memory_bytes: int
    memory_limit_bytes: int
    network_rx_bytes: int
    network_tx_bytes: int
    pids: int
    #: What the workspace held at the server's last check (``None``: not
    #: measured, e.g. on Kubernetes, which bounds it itself).
    workspace_bytes: Optional[int] = None
    #: The most it may hold (``None``: no limit).
    workspace_limit_bytes: Optional[int] = None

    @classmethod
    def from_json(cls, d: Json) -> "ContainerResources":
        return cls(
            cpu_percent=float(d.get("cpuPercent", 0.0)),
            memory_bytes=int(d.get("memoryBytes", 0)),
            memory_limit_bytes=int(d.get("memoryLimitBytes", 0)),
            network_rx_bytes=int(d.get("networkRxBytes", 0)),
            network_tx_bytes=int(d.get("networkTxBytes", 0)),
            pids=int(d.get("pids", 0)),
            workspace_bytes=_opt_int(d, "workspaceBytes"),
            workspace_limit_bytes=_opt_int(d, "workspaceLimitBytes"),
        )


@dataclass(frozen=True)
class PendingPermission:
    """A question the running turn waits on: may ``tool`` run with
    ``input``? Answer it with :meth:`claudecluster.Client.answer_permission`."""

    request_id: str
    tool: str
    input: Any
    #: When it was asked, in milliseconds since the Unix epoch.
    timestamp: int

    @classmethod
    def from_json(cls, d: Json) -> "PendingPermission":
        return cls(
            request_id=d["requestId"],
            tool=d["tool"],
            input=d.get("input"),
            timestamp=int(d.get("timestamp", 0)),
        )


@dataclass(frozen=True)
class PermissionAnswered:
    """How a question was settled by :meth:`claudecluster.Client.answer_permission`."""

    session_id: str
    request_id: str
    tool: str
    allow: bool
    #: The tool is allowed for the rest of the session from now on.
    always: bool

    @classmethod
    def from_json(cls, d: Json) -> "PermissionAnswered":
        return cls(
            session_id=d["sessionId"],
            request_id=d["requestId"],
            tool=d["tool"],
            allow=bool(d["allow"]),
            always=bool(d.get("always", False)),
        )


@dataclass(frozen=True)
class Session:
    """A session's status (``GET /api/v1/sessions/{id}``, and each item of
    the list). Times are RFC 3339 strings as the server writes them."""

    session_id: str
    container_id: Optional[str]
    status: SeedStatus
    state: SessionState
    repo_url: str
    limits: SessionLimits
    created_at: str
    updated_at: str
    expires_at: str
    #: Sequence number of the newest event: ``stream(id, since=last_seq)``
    #: starts after it.
    last_seq: int
    endpoints: Endpoints
    reason: Optional[str] = None
    branch: Optional[str] = None
    usage: UsageTotals = field(default_factory=UsageTotals)
    oom_kills: int = 0
    resources: Optional[ContainerResources] = None
    #: Questions the running turn waits on (not empty: it waits for a
    #: person).
    pending_permissions: List[PendingPermission] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: Json) -> "Session":
        resources = d.get("resources")
        return cls(
            session_id=d["sessionId"],
            container_id=d.get("containerId"),
            status=_enum(SeedStatus, d["status"]),
            state=_enum(SessionState, d["state"]),
            repo_url=d["repoUrl"],
            limits=SessionLimits.from_json(d["limits"]),
            created_at=d["createdAt"],
            updated_at=d["updatedAt"],
            expires_at=d["expiresAt"],
            last_seq=int(d["lastSeq"]),
            endpoints=Endpoints.from_json(d["endpoints"]),
            reason=d.get("reason"),
            branch=d.get("branch"),
            usage=UsageTotals.from_json(d.get("usage") or {}),
            oom_kills=int(d.get("oomKills", 0)),
            resources=None if resources is None else ContainerResources.from_json(resources),
            pending_permissions=[
                PendingPermission.from_json(p) for p in d.get("pendingPermissions") or []
            ],
        )


@dataclass(frozen=True)
class CreatedSession:
    """The answer to create; cloning goes on in the background (see
    :meth:`claudecluster.Client.wait_for_state`)."""

    session_id: str
    container_id: str
    status: SeedStatus
    state: SessionState
    endpoints: Endpoints
    #: True when an ``Idempotency-Key`` seen before returned the session it
    #: created then (the server's ``Idempotent-Replayed: true``).
    replayed: bool = False

    @classmethod
    def from_json(cls, d: Json, replayed: bool = False) -> "CreatedSession":
        return cls(
            session_id=d["sessionId"],
            container_id=d["containerId"],
            status=_enum(SeedStatus, d["status"]),
            state=_enum(SessionState, d["state"]),
            endpoints=Endpoints.from_json(d["endpoints"]),
            replayed=replayed,
        )


@dataclass(frozen=True)
class CommandAccepted:
    session_id: str
    accepted: bool
    #: The state the command found: ``ready``/``busy`` (it runs or waits
    #: its turn) or a starting state (it is queued until ``ready``).
    state: SessionState

    @classmethod
    def from_json(cls, d: Json) -> "CommandAccepted":
        return cls(
            session_id=d["sessionId"],
            accepted=bool(d["accepted"]),
            state=_enum(SessionState, d["state"]),
        )


@dataclass(frozen=True)
class Interrupted:
    session_id: str
    #: False when no turn was running.
    interrupted: bool

    @classmethod
    def from_json(cls, d: Json) -> "Interrupted":
        return cls(session_id=d["sessionId"], interrupted=bool(d["interrupted"]))


@dataclass(frozen=True)
class DeletedSession:
    session_id: str
    status: SeedStatus
    state: SessionState

    @classmethod
    def from_json(cls, d: Json) -> "DeletedSession":
        return cls(
            session_id=d["sessionId"],
            status=_enum(SeedStatus, d["status"]),
            state=_enum(SessionState, d["state"]),
        )


@dataclass(frozen=True)
class FileChange:
    path: str
    insertions: int
    deletions: int
    binary: bool

    @classmethod
    def from_json(cls, d: Json) -> "FileChange":
        return cls(
            path=d["path"],
            insertions=int(d["insertions"]),
            deletions=int(d["deletions"]),
            binary=bool(d["binary"]),
        )


@dataclass(frozen=True)
class Diff:
    """The session's changes against the commit it started from:
    committed, uncommitted and new files."""

    base_commit: str
    head_commit: str
    files: List[FileChange]
    insertions: int
    deletions: int
    #: Unified diff (``git diff``).
    diff: str
    #: The session's commits as a ``git format-patch`` series.
    patches: str
    #: Whether ``diff`` or ``patches`` was cut (at 4 MiB).
    truncated: bool

    @classmethod
    def from_json(cls, d: Json) -> "Diff":
        return cls(
            base_commit=d["baseCommit"],
            head_commit=d["headCommit"],
            files=[FileChange.from_json(f) for f in d["files"]],
            insertions=int(d["insertions"]),
            deletions=int(d["deletions"]),
            diff=d["diff"],
            patches=d["patches"],
            truncated=bool(d["truncated"]),
        )


@dataclass(frozen=True)
class DirEntry:
    name: str
    #: ``file | dir | symlink | other`` (symlinks are not followed).
    type: str
    #: Bytes for a file, else 0.
    size: int

    @classmethod
    def from_json(cls, d: Json) -> "DirEntry":
        return cls(name=d["name"], type=d["type"], size=int(d["size"]))


@dataclass(frozen=True)
class Directory:
    """A directory of the checkout, its entries sorted (``.git`` left out)."""

    #: Normalised; ``""`` is the checkout's root.
    path: str
    entries: List[DirEntry]
    truncated: bool

    @property
    def names(self) -> List[str]:
        return [e.name for e in self.entries]

    @classmethod
    def from_json(cls, d: Json) -> "Directory":
        return cls(
            path=d["path"],
            entries=[DirEntry.from_json(e) for e in d["entries"]],
            truncated=bool(d["truncated"]),
        )


@dataclass(frozen=True)
class File:
    """A file of the checkout: its first MiB."""

    path: str
    #: The file's size on disk.
    size: int
    #: ``utf8`` (text) or ``base64`` (anything else).
    encoding: str
    content: str
    #: Whether ``content`` is shorter than the file.
    truncated: bool

    @property
    def data(self) -> bytes:
        """The bytes returned, whatever the encoding."""
        if self.encoding == "base64":
            return base64.b64decode(self.content)
        return self.content.encode("utf-8")

    @property
    def text(self) -> str:
        """The content as text (binary content decoded with replacement)."""
        if self.encoding == "base64":
            return self.data.decode("utf-8", "replace")
        return self.content

    @classmethod
    def from_json(cls, d: Json) -> "File":
        return cls(
            path=d["path"],
            size=int(d["size"]),
            encoding=d["encoding"],
            content=d["content"],
            truncated=bool(d["truncated"]),
        )


def decode_path(d: Json) -> Union[Directory, File]:
    """``GET …/files``: a :class:`Directory` or a :class:`File` by ``type``."""
    if d.get("type") == "dir":
        return Directory.from_json(d)
    if d.get("type") == "file":
        return File.from_json(d)
    raise ValueError(f"unknown path type {d.get('type')!r}")


@dataclass(frozen=True)
class PullRequestOptions:
    """The pull (merge) request a push opens; title and body default to the
    session's last result, ``base`` to the branch it started from."""

    title: Optional[str] = None
    body: Optional[str] = None
    base: Optional[str] = None
    draft: bool = False

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"draft": self.draft}
        for key in ("title", "body", "base"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str
    base: str

    @classmethod
    def from_json(cls, d: Json) -> "PullRequest":
        return cls(number=int(d["number"]), url=d["url"], base=d["base"])


@dataclass(frozen=True)
class PushResult:
    session_id: str
    branch: str
    #: The commit the branch now points at.
    commit: str
    #: Whether the push created the branch.
    created: bool
    #: Whether uncommitted work was committed first.
    committed_changes: bool
    pull_request: Optional[PullRequest] = None

    @classmethod
    def from_json(cls, d: Json) -> "PushResult":
        pr = d.get("pullRequest")
        return cls(
            session_id=d["sessionId"],
            branch=d["branch"],
            commit=d["commit"],
            created=bool(d["created"]),
            committed_changes=bool(d["committedChanges"]),
            pull_request=None if pr is None else PullRequest.from_json(pr),
        )


@dataclass(frozen=True)
class TurnSummary:
    """One turn's outcome, from Claude Code's ``result``."""

    #: ``success``, ``error_max_turns``, ``error_max_budget_usd``, …
    subtype: str
    is_error: bool
    duration_ms: int
    #: What Claude Code reported for this turn (not cumulative).
    cost_usd: float
    #: Model calls in the turn.
    num_turns: int
    usage: TokenUsage
    terminal_reason: Optional[str] = None
    error: Optional[str] = None
    api_error_status: Optional[int] = None

    @classmethod
    def from_json(cls, d: Json) -> "TurnSummary":
        return cls(
            subtype=d["subtype"],
            is_error=bool(d["isError"]),
            duration_ms=int(d.get("durationMs", 0)),
            cost_usd=float(d.get("costUsd", 0.0)),
            num_turns=int(d.get("numTurns", 0)),
            usage=TokenUsage.from_json(d.get("usage") or {}),
            terminal_reason=d.get("terminalReason"),
            error=d.get("error"),
            api_error_status=_opt_int(d, "apiErrorStatus"),
        )


# ---------------------------------------------------------------------------
# Stream events: the `{type, data}` envelopes of the WebSocket and of logs.


@dataclass(frozen=True)
class Event:
    """One message of a session's stream. ``seq`` increases by one per
    stored event of a session; it is 0 for messages that are not stored
    (keepalive answers, refusals of what this connection sent)."""

    type: ClassVar[str] = ""
    seq: int
    #: Milliseconds since the Unix epoch.
    timestamp: int


@dataclass(frozen=True)
class OutputEvent(Event):
    """Text a person reads: the assistant's words, each tool call
    (``▶ Bash: …``), a short form of its result, a summary per turn."""

    type: ClassVar[str] = "output"
    text: str
    #: The raw Claude Code event the text came from, when kept.
    event: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class StatusEvent(Event):
    type: ClassVar[str] = "status"
    state: SessionState
    reason: Optional[str] = None


@dataclass(frozen=True)
class ErrorEvent(Event):
    type: ClassVar[str] = "error"
    message: str
    #: e.g. ``oom_kill``, ``agent_exited``, ``invalid_message``.
    code: Optional[str] = None


@dataclass(frozen=True)
class CommandEvent(Event):
    """A turn handed to Claude Code."""

    type: ClassVar[str] = "command"
    text: str


@dataclass(frozen=True)
class ClaudeEvent(Event):
    """A raw Claude Code event with no text (``system/init``, …)."""

    type: ClassVar[str] = "claude"
    event: Dict[str, Any]


@dataclass(frozen=True)
class TurnResultEvent(Event):
    """A turn ended: its outcome, and the session's totals so far."""

    type: ClassVar[str] = "turnResult"
    turn: TurnSummary
    totals: UsageTotals


@dataclass(frozen=True)
class KeepaliveEvent(Event):
    """The answer to a ``keepalive`` (not stored: ``seq`` 0)."""

    type: ClassVar[str] = "keepalive"


@dataclass(frozen=True)
class PermissionRequestEvent(Event):
    """Claude Code asks whether ``tool`` may run with ``input``; the turn
    waits for :meth:`claudecluster.Client.answer_permission`."""

    type: ClassVar[str] = "permissionRequest"
    request_id: str
    tool: str
    input: Any = None


@dataclass(frozen=True)
class PermissionAnswerEvent(Event):
    """A question was settled: by a person (``answered_by``), an earlier
    ``always``, the timeout, or withdrawn by Claude Code (``source``)."""

    type: ClassVar[str] = "permissionAnswer"
    request_id: str
    tool: str
    allow: bool
    always: bool
    #: ``answer``, ``always``, ``timeout`` or ``cancelled``.
    source: str
    #: What the model was told, for a denial.
    message: Optional[str] = None
    answered_by: Optional[str] = None


@dataclass(frozen=True)
class UnknownEvent(Event):
    """A message type this SDK does not know (a newer server's)."""

    type_name: str = ""
    data: Dict[str, Any] = field(default_factory=dict)


def decode_event(message: Json) -> Event:
    """An event from its ``{type, data}`` envelope. ``seq`` is read from
    ``data`` (where the server puts it), else from beside ``type``."""
    kind = message.get("type")
    data: Json = message.get("data") or {}
    seq_value = data.get("seq", message.get("seq", 0))
    seq = int(seq_value or 0)
    ts = int(data.get("timestamp", 0))
    if kind == "output":
        return OutputEvent(seq, ts, text=data["text"], event=data.get("event"))
    if kind == "status":
        return StatusEvent(
            seq, ts, state=_enum(SessionState, data["state"]), reason=data.get("reason")
        )
    if kind == "error":
        return ErrorEvent(seq, ts, message=data["message"], code=data.get("code"))
    if kind == "command":
        return CommandEvent(seq, ts, text=data["text"])
    if kind == "claude":
        return ClaudeEvent(seq, ts, event=dict(data.get("event") or {}))
    if kind == "turnResult":
        return TurnResultEvent(
            seq,
            ts,
            turn=TurnSummary.from_json(data["turn"]),
            totals=UsageTotals.from_json(data.get("totals") or {}),
        )
    if kind == "keepalive":
        return KeepaliveEvent(seq, ts)
    if kind == "permissionRequest":
        return PermissionRequestEvent(
            seq, ts, request_id=data["requestId"], tool=data["tool"], input=data.get("input")
        )
    if kind == "permissionAnswer":
        return PermissionAnswerEvent(
            seq,
            ts,
            request_id=data["requestId"],
            tool=data["tool"],
            allow=bool(data["allow"]),
            always=bool(data.get("always", False)),
            source=str(data.get("source", "")),
            message=data.get("message"),
            answered_by=data.get("answeredBy"),
        )
    return UnknownEvent(seq, ts, type_name=str(kind), data=dict(data))


@dataclass(frozen=True)
class Logs:
    """A page of a session's log; pass ``next_since`` as ``since`` for the
    next page."""

    session_id: str
    events: List[Event]
    next_since: int

    @classmethod
    def from_json(cls, d: Json) -> "Logs":
        return cls(
            session_id=d["sessionId"],
            events=[decode_event(e) for e in d["events"]],
            next_since=int(d["nextSince"]),
        )


@dataclass(frozen=True)
class Turn:
    """What :meth:`claudecluster.Client.run` read for one command: every
    event from the command to the session's next ``ready``."""

    events: List[Event]

    @property
    def text(self) -> str:
        """The concatenated ``output`` text."""
        return "".join(e.text for e in self.events if isinstance(e, OutputEvent))

    @property
    def result(self) -> Optional[TurnSummary]:
        """The last turn's outcome, if it reported one."""
        for e in reversed(self.events):
            if isinstance(e, TurnResultEvent):
                return e.turn
        return None

    @property
    def is_error(self) -> bool:
        r = self.result
        return r is None or r.is_error
