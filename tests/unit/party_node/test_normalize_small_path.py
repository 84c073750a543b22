"""The per-value fast path for a few ids gives exactly what the vectorized path gives."""

import random

import pytest

from party_node.schema import IdKind, national_id_check_char, normalize_ids


def samples(kind: IdKind, n: int = 400) -> list[object]:
    rng = random.Random(kind.value)
    out: list[object] = [None, "", "   ", "abc", "0" * 18]
    for _ in range(n):
        if kind is IdKind.PHONE:
            core = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
            out.append(
                rng.choice(
                    [
                        core,
                        f"+86 {core}",
                        f"0086{core}",
                        f"86{core}",
                        f"({core[:3]}) {core[3:7]}-{core[7:]}",
                        f"+1 {core}",
                        f"{core}x",
                        core[:-1],
                        f"00 44 {core}",
                        f" {core} ",
                    ]
                )
            )
        elif kind is IdKind.NATIONAL_ID:
            first = (
                f"{rng.randrange(10**5, 10**6)}{rng.randrange(1950, 2005)}{rng.randrange(1, 13):02d}"
                f"{rng.randrange(1, 29):02d}{rng.randrange(1000):03d}"
            )
            good = first + national_id_check_char(first)
            out.append(
                rng.choice(
                    [
                        good,
                        good.lower(),
                        f" {good} ",
                        first + "0" if good[-1] != "0" else first + "1",
                        first[:6] + "2500" + first[10:] + national_id_check_char(first[:6] + "2500" + first[10:]),
                    ]
                )
            )
        else:
            out.append(rng.choice(["Zoë", "  zoe ", "张伟", "x" * 130, "ab\u0301c", 12345]))
    return out


@pytest.mark.parametrize("kind", list(IdKind))
def test_small_path_equals_vectorized_path(kind):
    values = samples(kind)
    vectorized = normalize_ids(values, kind)  # > 64 values: the pyarrow path
    small = [x for i in range(0, len(values), 50) for x in normalize_ids(values[i : i + 50], kind)]
    assert small == vectorized
    assert any(v is not None for v in small) and any(v is None for v in small)
