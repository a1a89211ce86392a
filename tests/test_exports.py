"""The public names of each package are pinned: adding or removing one is a deliberate change."""

from __future__ import annotations

import piping_server
import piping_server.client
import piping_server.core
import piping_server.pages
import piping_server.server


def test_core_exports() -> None:
    assert sorted(piping_server.core.__all__) == [
        "AcceptSender", "Action", "CoreMisuse", "CutReceivers", "DetachReceiver", "DropReceiver", "EndSender",
        "Event", "Hub", "JoinLive", "LIVE_ACCEPTED", "Peer", "PeerLost", "PipingError", "ProtocolError",
        "RESERVED_PATHS", "ReceiverArrived", "ReceiverFinished", "ReceiverLagged", "Reject", "SenderArrived",
        "StartLive", "StartTransfer", "TransferExpired", "UploadEnded", "UploadFailed", "WaitExpired", "WriteLine",
        "is_reserved", "live_joined", "live_lagged", "live_left", "live_summary", "parse_n", "query_param",
        "remove_dot_segments", "split_target",
    ]  # fmt: skip


def test_pages_exports() -> None:
    assert sorted(piping_server.pages.__all__) == ["Page", "RESERVED_PATHS", "is_reserved", "render_page"]
    assert piping_server.pages.RESERVED_PATHS is piping_server.core.RESERVED_PATHS


def test_client_exports() -> None:
    assert sorted(piping_server.client.__all__) == [
        "ArchiveError", "BadPassphraseError", "DecryptionError", "GetResult", "IntegrityError", "PipingError",
        "Reporter", "SendResult", "ServerRejectedError", "ServerUnreachableError", "TransferInterruptedError",
        "UsageError", "get", "get_async", "resolve_url", "send", "send_async",
    ]  # fmt: skip


def test_one_root_exception() -> None:
    assert issubclass(piping_server.client.PipingError, piping_server.core.PipingError)
    assert issubclass(piping_server.core.ProtocolError, piping_server.core.PipingError)


def test_every_exported_name_exists() -> None:
    for module in (piping_server, piping_server.core, piping_server.pages, piping_server.client, piping_server.server):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)
