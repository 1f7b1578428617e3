"""The sans-IO XenStore codec: framing, payload helpers, paths, permissions."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.xenstore import wire
from agent.xenstore.wire import Access, Decoder, Op, Packet, Perm, ProtocolError


def test_op_numbers_match_xs_wire_h() -> None:
    # xs_wire.h: XS_RESTRICT (20) was removed, RESET_WATCHES = SET_TARGET + 2.
    assert Op.CONTROL == 0
    assert Op.WRITE == 11
    assert Op.WATCH_EVENT == 15
    assert Op.ERROR == 16
    assert Op.SET_TARGET == 19
    assert Op.RESET_WATCHES == 21
    assert Op.DIRECTORY_PART == 22
    assert 20 not in {int(op) for op in Op}
    assert wire.TYPE_COUNT == 23


def test_encode_header_layout() -> None:
    raw = Packet(Op.READ, 7, 3, b"/local\0").encode()
    assert raw[:16] == struct.pack("<IIII", 2, 7, 3, 7)
    assert raw[16:] == b"/local\0"


def test_encode_refuses_oversized_payload_but_raw_does_not() -> None:
    with pytest.raises(ProtocolError, match="4097 bytes exceeds 4096"):
        Packet(Op.WRITE, 1, 0, b"x" * 4097).encode()
    Packet(Op.WRITE, 1, 0, b"x" * 4096).encode()
    assert len(wire.encode_raw(Op.WRITE, 1, 0, b"x" * 5000)) == 5016


def test_encode_rejects_fields_beyond_32_bits() -> None:
    with pytest.raises(ProtocolError, match="req_id"):
        wire.encode_raw(Op.READ, 1 << 32, 0, b"")


def test_decoder_reassembles_byte_by_byte() -> None:
    packets = [
        Packet(Op.WRITE, 1, 0, wire.write_payload(b"/a", b"\xff\x00bin")),
        Packet(Op.WATCH_EVENT, 0, 0, wire.join(b"/a", b"tok")),
        Packet(999, 2, 5, b""),  # unknown type survives: the daemon answers ENOSYS
    ]
    stream = b"".join(p.encode() for p in packets)
    dec = Decoder()
    got: list[Packet] = []
    for i in range(len(stream)):
        dec.feed(stream[i : i + 1])
        got.extend(dec.packets())
    assert got == packets
    assert dec.pending == 0


def test_decoder_rejects_oversized_header_and_stays_broken() -> None:
    dec = Decoder()
    dec.feed(struct.pack("<IIII", Op.WRITE, 1, 0, 4097))
    with pytest.raises(ProtocolError, match="WRITE header announces 4097"):
        dec.next_packet()
    with pytest.raises(ProtocolError):
        dec.feed(b"more")


def test_error_name() -> None:
    assert Packet(Op.ERROR, 1, 0, b"ENOENT\0").error_name() == "ENOENT"
    assert Packet(Op.READ, 1, 0, b"ENOENT").error_name() is None
    assert Packet(99, 1, 0, b"").op_name == "UNKNOWN(99)"


def test_join_and_split() -> None:
    assert wire.join(b"a", b"", b"c") == b"a\0\0c\0"
    assert wire.split(b"a\0\0c\0") == [b"a", b"", b"c"]
    assert wire.split(b"/path\0value") == [b"/path", b"value"]
    assert wire.split(b"") == []
    with pytest.raises(ProtocolError, match="contains NUL"):
        wire.join(b"a\0b")


@pytest.mark.parametrize(
    ("path", "special", "why"),
    [
        (b"/", False, None),
        (b"/local/domain/0/backend/vbd", False, None),
        (b"/a-b_c@d", False, None),
        (b"@introduceDomain", True, None),
        (b"@introduceDomain", False, "must start with /"),
        (b"relative", False, "must start with /"),
        (b"/a/", False, "must not end with /"),
        (b"/a//b", False, "must not contain //"),
        (b"/a b", False, "characters outside"),
        (b"/a.b", False, "characters outside"),
        (b"/" + b"a" * 2047, False, None),
        (b"/" + b"a" * 2048, False, "longer than 2048"),
        # The /local/domain/<id>/ prefix does not count against the bound.
        (b"/local/domain/12345/" + b"a" * 2048, False, None),
        (b"/local/domain/12345/" + b"a" * 2049, False, "longer than 2048"),
    ],
)
def test_path_error(path: bytes, special: bool, why: str | None) -> None:
    got = wire.path_error(path, allow_special=special)
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got


def test_canonical_path() -> None:
    assert wire.canonical_path(b"device/vbd", 5) == b"/local/domain/5/device/vbd"
    assert wire.canonical_path(b"/abs", 5) == b"/abs"
    assert wire.canonical_path(b"@releaseDomain", 5) == b"@releaseDomain"


def test_perms_round_trip() -> None:
    perms = [Perm(Access.NONE, 0), Perm(Access.READ, 5), Perm(Access.BOTH, 65535)]
    assert wire.encode_perms(perms) == b"n0\0r5\0b65535\0"
    assert wire.parse_perms(b"n0\0r5\0b65535\0") == perms
    assert Access.BOTH.can_read and Access.BOTH.can_write
    assert not Access.READ.can_write and not Access.WRITE.can_read


@pytest.mark.parametrize(
    ("text", "why"),
    [(b"x5", "unknown access letter"), (b"r", "too short"), (b"r5a", "not a number"),
     (b"r70000", "out of range")],
)
def test_perm_parse_errors(text: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        Perm.parse(text)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.binary(max_size=64), max_size=40), st.integers(1, 64))
def test_decoder_never_crashes_on_arbitrary_bytes(chunks: list[bytes], step: int) -> None:
    """Whatever arrives, the decoder yields packets or raises ProtocolError."""
    dec = Decoder()
    data = b"".join(chunks)
    try:
        for i in range(0, len(data), step):
            dec.feed(data[i : i + step])
            for packet in dec.packets():
                assert len(packet.payload) <= wire.PAYLOAD_MAX
                packet.op_name  # noqa: B018 - must not raise for any type
                packet.error_name()
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 0xFFFFFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.binary(max_size=wire.PAYLOAD_MAX),
        ),
        max_size=8,
    ),
    st.integers(1, 5000),
)
def test_decoder_round_trips_any_valid_stream(
    specs: list[tuple[int, int, int, bytes]], step: int
) -> None:
    packets = [Packet(*s) for s in specs]
    data = b"".join(p.encode() for p in packets)
    dec = Decoder()
    got: list[Packet] = []
    for i in range(0, len(data), step):
        dec.feed(data[i : i + step])
        got.extend(dec.packets())
    assert got == packets


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=40))
def test_perm_parse_never_crashes(text: bytes) -> None:
    try:
        perm = Perm.parse(text)
    except ProtocolError:
        return
    assert Perm.parse(perm.encode()) == perm


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=80), st.booleans())
def test_path_error_never_crashes(path: bytes, special: bool) -> None:
    why = wire.path_error(path, allow_special=special)
    assert why is None or isinstance(why, str)
