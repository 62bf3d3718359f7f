"""The embedded registrar: its wire codec, election, leases, failover and bad input."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgpack
import pytest

from ergo_py import gen, net
from ergo_py.gen import Route
from ergo_py.net.registrar import EmbeddedRegistrar
from ergo_py.net.registrar.proto import (
    HEADER,
    PROTOCOL_VERSION,
    Message,
    MessageDecoder,
    Register,
    RegisterReply,
    Resolve,
    ResolveReply,
    Unregister,
    encode,
)

T = TypeVar("T")

ROUTE_A = Route("", 11144, tls=True, handshake_version=1, proto_version=1)
ROUTE_B = Route("127.0.0.1", 11145)
ROUTE_C = Route("localhost", 11146, tls=True)
WAIT = 5.0  # upper bound for anything that should happen "soon"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """One fresh event loop per test, with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, 20.0))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make(port: int, **kwargs: Any) -> EmbeddedRegistrar:
    options: dict[str, Any] = {
        "port": port,
        "retry_interval": 0.05,
        "resolve_timeout": 2.0,
        "connect_timeout": 1.0,
        "frame_timeout": 0.5,
    }
    options.update(kwargs)
    return EmbeddedRegistrar(**options)


@asynccontextmanager
async def started(
    port: int, name: str, routes: list[Route], **kwargs: Any
) -> AsyncIterator[EmbeddedRegistrar]:
    reg = make(port, **kwargs)
    await reg.start(name, routes)
    try:
        yield reg
    finally:
        await reg.close()


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = WAIT) -> T:
    """Retry ``check`` until it stops raising ErgoError or AssertionError, bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await check()
        except (gen.ErgoError, AssertionError):
            if loop.time() >= deadline:
                raise
        await asyncio.sleep(0.02)


async def unresolvable(reg: EmbeddedRegistrar, name: str) -> None:
    """Passes once ``name`` resolves to ErrNoRoute; an AssertionError before."""
    try:
        routes = await reg.resolve(name)
    except gen.ErrNoRoute:
        return
    raise AssertionError(f"{name} still resolves to {routes}")


async def raw_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the peer has closed; any bytes before that are drained."""
    try:
        async with asyncio.timeout(WAIT):
            while await reader.read(4096):
                pass
    except ConnectionResetError:
        pass
    return True


# --------------------------------------------------------------------------- codec

MESSAGES: list[Message] = [
    Register("a@localhost", (ROUTE_A, ROUTE_B)),
    RegisterReply(),
    RegisterReply("taken"),
    Unregister("a@localhost"),
    Resolve("b@localhost"),
    ResolveReply((ROUTE_C,)),
    ResolveReply(error="no_route"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_a_round_trip(message: Message) -> None:
    decoder = MessageDecoder()
    decoder.receive_data(encode(message))
    assert decoder.next_message() == message
    assert decoder.next_message() is None
    assert decoder.buffered == 0


def test_decoder_reassembles_frames_fed_byte_by_byte_and_splits_glued_ones() -> None:
    stream = b"".join(encode(m) for m in MESSAGES)
    decoder = MessageDecoder()
    out: list[Message] = []
    for i in range(len(stream)):
        decoder.receive_data(stream[i : i + 1])
        while (m := decoder.next_message()) is not None:
            out.append(m)
    assert out == MESSAGES

    decoder = MessageDecoder()
    decoder.receive_data(stream)
    glued = []
    while (m := decoder.next_message()) is not None:
        glued.append(m)
    assert glued == MESSAGES


def frame(type_code: int, body: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    return HEADER.pack(version, type_code, len(body)) + body


MALFORMED = {
    "bad version": frame(Resolve.TYPE, msgpack.packb(["a@b"]), version=9),
    "unknown type": frame(99, msgpack.packb(["a@b"])),
    "not msgpack": frame(Resolve.TYPE, b"\xc1\xc1"),
    "trailing bytes": frame(Resolve.TYPE, msgpack.packb(["a@b"]) + b"\x00"),
    "not an array": frame(Resolve.TYPE, msgpack.packb({"node": "a@b"})),
    "wrong field count": frame(Resolve.TYPE, msgpack.packb(["a@b", 1])),
    "empty node": frame(Resolve.TYPE, msgpack.packb([""])),
    "node not a str": frame(Resolve.TYPE, msgpack.packb([7])),
    "node too long": frame(Resolve.TYPE, msgpack.packb(["n" * 300 + "@h"])),
    "port is a str": frame(Register.TYPE, msgpack.packb(["a@b", [["h", "1", False, 1, 1]]])),
    "port out of range": frame(Register.TYPE, msgpack.packb(["a@b", [["h", 70000, False, 1, 1]]])),
    "tls is an int": frame(Register.TYPE, msgpack.packb(["a@b", [["h", 1, 1, 1, 1]]])),
    "short route": frame(Register.TYPE, msgpack.packb(["a@b", [["h", 1]]])),
    "unknown error code": frame(RegisterReply.TYPE, msgpack.packb(["boom"])),
    "routes and error": frame(
        ResolveReply.TYPE, msgpack.packb([[["h", 1, False, 1, 1]], "no_route"])
    ),
    "binary field": frame(Resolve.TYPE, msgpack.packb([b"a@b"])),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_raise_remote_protocol_error(data: bytes) -> None:
    decoder = MessageDecoder()
    decoder.receive_data(data)
    with pytest.raises(gen.RemoteProtocolError):
        decoder.next_message()


def test_oversize_frame_is_refused_as_soon_as_its_header_arrives() -> None:
    decoder = MessageDecoder(max_frame_size=100)
    decoder.receive_data(HEADER.pack(PROTOCOL_VERSION, Resolve.TYPE, 101))
    with pytest.raises(gen.RemoteProtocolError, match="exceeds"):
        decoder.next_message()


def test_decoder_stays_broken_after_an_error() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(MALFORMED["unknown type"])
    with pytest.raises(gen.RemoteProtocolError):
        decoder.next_message()
    with pytest.raises(gen.RemoteProtocolError):
        decoder.receive_data(encode(Resolve("a@b")))
    with pytest.raises(gen.RemoteProtocolError):
        decoder.next_message()


def test_encoding_an_oversize_message_raises_err_too_large() -> None:
    routes = tuple(Route("h" * 200, 1) for _ in range(10))
    with pytest.raises(gen.ErrTooLarge):
        encode(Register("a@b", routes), max_frame_size=1000)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": "h", "port": 0},
        {"host": "h", "port": 65536},
        {"host": "h", "port": True},
        {"host": 1, "port": 1},
        {"host": "h", "port": 1, "tls": "yes"},
        {"host": "h", "port": 1, "handshake_version": -1},
    ],
)
def test_route_with_a_bad_field_raises_err_incorrect(kwargs: dict[str, Any]) -> None:
    with pytest.raises(gen.ErrIncorrect):
        Route(**kwargs)


# --------------------------------------------------------------------------- election


def test_first_node_serves_and_second_registers_and_both_resolve_each_other() -> None:
    async def main() -> None:
        port = free_port()
        async with (
            started(port, "a@localhost", [ROUTE_A]) as a,
            started(port, "b@localhost", [ROUTE_B, ROUTE_C]) as b,
        ):
            assert a.is_server
            assert not b.is_server
            assert await a.resolve("b@localhost") == [ROUTE_B, ROUTE_C]
            assert await b.resolve("a@localhost") == [ROUTE_A]
            assert await b.resolve("b@localhost") == [ROUTE_B, ROUTE_C]

    run(main())


def test_embedded_registrar_implements_the_registrar_protocol() -> None:
    assert isinstance(EmbeddedRegistrar(), net.Registrar)


def test_serving_node_lists_the_hosts_nodes_and_a_client_cannot() -> None:
    async def main() -> None:
        port = free_port()
        async with (
            started(port, "a@localhost", [ROUTE_A]) as a,
            started(port, "b@localhost", [ROUTE_B]) as b,
        ):
            assert a.nodes() == ["a@localhost", "b@localhost"]
            with pytest.raises(gen.ErrUnsupported):
                b.nodes()

    run(main())


def test_second_registrant_of_a_name_gets_err_taken() -> None:
    async def main() -> None:
        port = free_port()
        async with started(port, "a@localhost", [ROUTE_A]), started(port, "b@localhost", [ROUTE_B]):
            dup = make(port)
            with pytest.raises(gen.ErrTaken):
                await dup.start("b@localhost", [ROUTE_C])
            assert not dup.is_server
            await dup.close()
            served_dup = make(port)
            with pytest.raises(gen.ErrTaken):
                await served_dup.start("a@localhost", [ROUTE_C])
            await served_dup.close()
            assert await make(port).resolve("b@localhost") == [ROUTE_B]

    run(main())


def test_unknown_name_raises_err_no_route_on_server_and_client() -> None:
    async def main() -> None:
        port = free_port()
        async with (
            started(port, "a@localhost", [ROUTE_A]) as a,
            started(port, "b@localhost", [ROUTE_B]) as b,
        ):
            with pytest.raises(gen.ErrNoRoute):
                await a.resolve("nobody@localhost")
            with pytest.raises(gen.ErrNoRoute):
                await b.resolve("nobody@localhost")

    run(main())


def test_start_without_routes_or_with_a_bad_name_raises_err_incorrect() -> None:
    async def main() -> None:
        port = free_port()
        reg = make(port)
        with pytest.raises(gen.ErrIncorrect):
            await reg.start("a@localhost", [])
        with pytest.raises(gen.ErrIncorrect):
            await reg.start("no-host", [ROUTE_A])
        with pytest.raises(gen.ErrIncorrect):
            await reg.start("a@localhost", [("localhost", 1)])  # type: ignore[list-item]
        assert not reg.is_server
        await reg.start("a@localhost", [ROUTE_A])
        assert reg.is_server
        await reg.close()

    run(main())


def test_hidden_node_neither_serves_nor_registers_but_resolves() -> None:
    async def main() -> None:
        port = free_port()
        async with started(port, "a@localhost", [ROUTE_A]) as a:
            hidden = make(port)
            await hidden.start("h@localhost", [ROUTE_B], hidden=True)
            try:
                assert not hidden.is_server
                assert await hidden.resolve("a@localhost") == [ROUTE_A]
                with pytest.raises(gen.ErrNoRoute):
                    await a.resolve("h@localhost")
            finally:
                await hidden.close()

    run(main())


def test_resolve_without_any_registrar_raises_err_no_connection() -> None:
    async def main() -> None:
        reg = make(free_port(), resolve_timeout=0.2)
        with pytest.raises(gen.ErrNoConnection):
            await reg.resolve("a@localhost")
        await reg.close()

    run(main())


def test_start_against_a_silent_port_holder_raises_err_timeout() -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen(8)
            reg = make(holder.getsockname()[1], resolve_timeout=0.2)
            with pytest.raises(gen.ErrTimeout):
                await reg.start("a@localhost", [ROUTE_A])
            assert not reg.is_server
            await reg.close()

    run(main())


def test_resolve_against_a_silent_port_holder_raises_err_timeout() -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen(8)
            reg = make(holder.getsockname()[1], resolve_timeout=0.2)
            with pytest.raises(gen.ErrTimeout):
                await reg.resolve("a@localhost")
            await reg.close()

    run(main())


# --------------------------------------------------------------------------- leases


def test_client_stop_drops_its_registration_and_frees_the_name() -> None:
    async def main() -> None:
        port = free_port()
        async with started(port, "a@localhost", [ROUTE_A]) as a:
            b = make(port)
            await b.start("b@localhost", [ROUTE_B])
            await b.close()

            await eventually(lambda: unresolvable(a, "b@localhost"))
            async with started(port, "b@localhost", [ROUTE_C]):
                assert await a.resolve("b@localhost") == [ROUTE_C]

    run(main())


def test_closed_raw_lease_drops_its_registration() -> None:
    async def main() -> None:
        port = free_port()
        async with started(port, "a@localhost", [ROUTE_A]) as a:
            reader, writer = await raw_connection(port)
            writer.write(encode(Register("raw@localhost", (ROUTE_B,))))
            decoder = MessageDecoder()
            while (reply := decoder.next_message()) is None:
                decoder.receive_data(await asyncio.wait_for(reader.read(4096), WAIT))
            assert reply == RegisterReply()
            assert await a.resolve("raw@localhost") == [ROUTE_B]
            writer.close()
            await writer.wait_closed()

            await eventually(lambda: unresolvable(a, "raw@localhost"))

    run(main())


def test_clients_fail_over_when_the_server_stops() -> None:
    async def main() -> None:
        port = free_port()
        a = make(port)
        await a.start("a@localhost", [ROUTE_A])
        async with (
            started(port, "b@localhost", [ROUTE_B]) as b,
            started(port, "c@localhost", [ROUTE_C]) as c,
        ):
            assert a.is_server
            await a.close()

            async def new_server() -> None:
                assert b.is_server or c.is_server

            await eventually(new_server)
            assert not (b.is_server and c.is_server)
            assert await eventually(lambda: b.resolve("c@localhost")) == [ROUTE_C]
            assert await eventually(lambda: c.resolve("b@localhost")) == [ROUTE_B]
            with pytest.raises(gen.ErrNoRoute):
                await b.resolve("a@localhost")

    run(main())


def test_node_started_during_failover_joins_and_everyone_resolves_everyone() -> None:
    async def main() -> None:
        port = free_port()
        a = make(port)
        await a.start("a@localhost", [ROUTE_A])
        async with started(port, "b@localhost", [ROUTE_B], retry_interval=0.2) as b:
            await a.close()
            async with started(port, "c@localhost", [ROUTE_C]) as c:
                assert await eventually(lambda: c.resolve("b@localhost")) == [ROUTE_B]
                assert await eventually(lambda: b.resolve("c@localhost")) == [ROUTE_C]
                assert b.is_server != c.is_server

    run(main())


def test_stop_is_idempotent_and_leaves_no_task_running() -> None:
    async def main() -> None:
        before = asyncio.all_tasks()
        port = free_port()
        a = make(port)
        b = make(port)
        await a.start("a@localhost", [ROUTE_A])
        await b.start("b@localhost", [ROUTE_B])
        await b.close()
        await a.close()
        await a.close()
        assert asyncio.all_tasks() == before
        with pytest.raises(gen.ErrNodeTerminated):
            await a.resolve("b@localhost")

    run(main())


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "data",
    [
        MALFORMED["not msgpack"],
        HEADER.pack(PROTOCOL_VERSION, Resolve.TYPE, 10_000_000),
        encode(RegisterReply()),
    ],
    ids=["malformed body", "oversize header", "reply from a client"],
)
def test_bad_frame_closes_that_connection_and_server_keeps_serving(data: bytes) -> None:
    async def main() -> None:
        port = free_port()
        async with started(port, "a@localhost", [ROUTE_A]):
            reader, writer = await raw_connection(port)
            writer.write(data)
            assert await closed_by_peer(reader)
            writer.close()
            async with started(port, "b@localhost", [ROUTE_B]) as b:
                assert await b.resolve("a@localhost") == [ROUTE_A]

    run(main())


def test_client_stalled_mid_frame_is_disconnected_and_server_keeps_serving() -> None:
    async def main() -> None:
        port = free_port()
        async with started(port, "a@localhost", [ROUTE_A], frame_timeout=0.2):
            reader, writer = await raw_connection(port)
            writer.write(encode(Resolve("a@localhost"))[:5])
            assert await closed_by_peer(reader)
            writer.close()
            async with started(port, "b@localhost", [ROUTE_B]) as b:
                assert await b.resolve("a@localhost") == [ROUTE_A]

    run(main())


def test_bad_frame_on_a_lease_drops_that_registration_only() -> None:
    async def main() -> None:
        port = free_port()
        async with (
            started(port, "a@localhost", [ROUTE_A]) as a,
            started(port, "b@localhost", [ROUTE_B]),
        ):
            reader, writer = await raw_connection(port)
            writer.write(encode(Register("raw@localhost", (ROUTE_C,))))
            writer.write(struct.pack(">BBI", PROTOCOL_VERSION, 200, 0))
            assert await closed_by_peer(reader)
            writer.close()

            await eventually(lambda: unresolvable(a, "raw@localhost"))
            assert await a.resolve("b@localhost") == [ROUTE_B]

    run(main())
