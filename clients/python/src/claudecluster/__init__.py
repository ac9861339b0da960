"""ClaudeCluster's Python SDK: isolated Claude Code sessions, one container
each, over the server's REST and WebSocket API.

    from claudecluster import Client
    cc = Client()                       # CLAUDECLUSTER_URL, CLAUDECLUSTER_TOKEN
    s = cc.create_session("https://github.com/me/app")   # ANTHROPIC_API_KEY
    print(cc.run(s.session_id, "add a --verbose flag").text)
    cc.delete_session(s.session_id)

The package's version is the API version it speaks (the OpenAPI document's
``info.version``).
"""

from . import webhooks
from ._version import __version__
from .client import DEFAULT_URL, Client
from .errors import (
    ClaudeClusterError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    ServerUnreachable,
    SessionFailed,
    StreamError,
    Unauthorized,
    Unavailable,
    WebhookVerificationError,
)
from .models import (
    ClaudeEvent,
    CommandAccepted,
    CommandEvent,
    ContainerResources,
    CreatedSession,
    DeletedSession,
    Diff,
    DirEntry,
    Directory,
    Egress,
    Endpoints,
    ErrorEvent,
    Event,
    File,
    FileChange,
    Interrupted,
    KeepaliveEvent,
    Logs,
    OutputEvent,
    PendingPermission,
    PermissionAnswerEvent,
    PermissionAnswered,
    PermissionRequestEvent,
    PullRequest,
    PullRequestOptions,
    PushResult,
    SeedStatus,
    Session,
    SessionLimits,
    SessionState,
    StatusEvent,
    TokenUsage,
    Turn,
    TurnResultEvent,
    TurnSummary,
    UnknownEvent,
    UsageTotals,
)
from .stream import EventStream

__all__ = [
    "__version__",
    "Client",
    "DEFAULT_URL",
    "EventStream",
    "webhooks",
    # errors
    "ClaudeClusterError",
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "RateLimited",
    "ServerError",
    "ServerUnreachable",
    "SessionFailed",
    "StreamError",
    "Unauthorized",
    "Unavailable",
    "WebhookVerificationError",
    # models
    "ClaudeEvent",
    "CommandAccepted",
    "CommandEvent",
    "ContainerResources",
    "CreatedSession",
    "DeletedSession",
    "Diff",
    "DirEntry",
    "Directory",
    "Egress",
    "Endpoints",
    "ErrorEvent",
    "Event",
    "File",
    "FileChange",
    "Interrupted",
    "KeepaliveEvent",
    "Logs",
    "OutputEvent",
    "PendingPermission",
    "PermissionAnswerEvent",
    "PermissionAnswered",
    "PermissionRequestEvent",
    "PullRequest",
    "PullRequestOptions",
    "PushResult",
    "SeedStatus",
    "Session",
    "SessionLimits",
    "SessionState",
    "StatusEvent",
    "TokenUsage",
    "Turn",
    "TurnResultEvent",
    "TurnSummary",
    "UnknownEvent",
    "UsageTotals",
]
