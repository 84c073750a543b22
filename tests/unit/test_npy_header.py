"""numpy's .npy header parsing from many threads at once (CPython 3.11's AST recursion-depth bug)."""

import io
import threading

import numpy as np

from fedcore.npy_header import install


def test_npy_headers_decode_from_many_threads_with_the_lock_installed():
    install()
    install()  # idempotent
    from numpy.lib import _format_impl

    assert _format_impl._read_array_header._fedcredit_locked
    buf = io.BytesIO()
    np.save(buf, np.arange(12.0).reshape(3, 4))
    data = buf.getvalue()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(300):
                assert np.load(io.BytesIO(data), allow_pickle=False).shape == (3, 4)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
