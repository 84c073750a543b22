import grpc
import pytest

from fedcore import errors as e
from fedcore.wire.errors import ERROR_OF_STATUS, STATUS_OF, status_of


def test_every_error_code_has_a_status():
    assert set(STATUS_OF) == e.ERROR_CODES


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (e.InvalidInput("bad row 3"), grpc.StatusCode.INVALID_ARGUMENT),
        (e.PartyUnavailable("yixin"), grpc.StatusCode.UNAVAILABLE),
        (e.TaskTimeout("yixin", "psi.blind", 3), grpc.StatusCode.DEADLINE_EXCEEDED),
        (e.PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_typed_errors_keep_their_message(exc, code):
    assert status_of(exc) == (code, str(exc))


def test_unexpected_errors_hide_their_detail():
    code, message = status_of(RuntimeError("/etc/secret path"))
    assert code == grpc.StatusCode.INTERNAL and "secret" not in message


def test_status_maps_back_to_our_own_types_only():
    assert all(issubclass(t, e.FedcreditError) for t in ERROR_OF_STATUS.values())


def test_party_task_error_code_from_a_peer_is_confined_to_known_codes():
    err = e.PartyTaskError("yixin", "psi.blind", "os.system", "whatever")
    assert err.kind == "internal" and "yixin" in str(err) and "psi.blind" in str(err)


def test_the_error_code_travels_in_the_trailers_and_picks_the_type() -> None:
    """A client decides by the code a peer sent (context_unknown), not by the message text."""
    import grpc

    from fedcore.errors import ContextUnknown, NotFound
    from fedcore.wire.errors import CODE_KEY, from_rpc_error

    class Err(grpc.RpcError):
        def __init__(self, code: str | None) -> None:
            self._code = code

        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.NOT_FOUND

        def details(self) -> str:
            return "some text that names nothing"

        def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
            return ((CODE_KEY, self._code),) if self._code else ()

    assert isinstance(from_rpc_error(Err("context_unknown"), "scoring"), ContextUnknown)
    plain = from_rpc_error(Err(None), "scoring")
    assert isinstance(plain, NotFound) and not isinstance(plain, ContextUnknown)
    # a code that disagrees with the status is not believed
    assert not isinstance(from_rpc_error(Err("permission_denied"), "scoring"), ContextUnknown)
