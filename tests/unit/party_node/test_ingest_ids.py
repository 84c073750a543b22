"""Id normalization per kind, including resident-id checksums."""

from __future__ import annotations

from party_node.schema import national_id_check_char, normalize_id, normalize_ids


def test_phone_normalization() -> None:
    got = normalize_ids(
        [
            "13800138000",
            "+86 138 0013 8000",
            "0086-13800138000",
            "(138)0013-8000",
            "8613800138000",
            "12800138000",
            "1380013800",
            "138001380001",
            "abc13800138000",
            "",
            None,
            "+1 415 555 0100",
        ],
        "phone",
    )
    assert got[:5] == ["13800138000"] * 5
    assert got[5:] == [None] * 7


def test_national_id_checksum() -> None:
    first17 = "11010519491231002"
    good = first17 + national_id_check_char(first17)
    assert good == "11010519491231002X"  # the standard published example
    assert normalize_id(good.lower(), "national_id") == good  # lower-case x upper-cased
    assert normalize_id(" " + good + " ", "national_id") == good
    assert normalize_id(first17 + "1", "national_id") is None  # bad checksum
    bad_month = "110105194913310023"
    assert normalize_id(bad_month, "national_id") is None
    assert normalize_id("1101051949123100", "national_id") is None  # too short
    ok2 = "44030119900101" + "123"
    ok2 += national_id_check_char(ok2)
    assert normalize_ids([ok2, good, "nope"], "national_id") == [ok2, good, None]


def test_opaque_nfc_and_strip() -> None:
    composed, decomposed = "Jos\u00e9", "Jose\u0301"
    assert normalize_id("  " + decomposed + "\t", "opaque") == composed
    assert normalize_id("   ", "opaque") is None
    assert normalize_id("x" * 129, "opaque") is None
    assert normalize_ids([25115, "a1"], "opaque") == ["25115", "a1"]
