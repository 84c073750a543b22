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
