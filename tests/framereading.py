"""Reading frames in tests the way a link reads them (``FrameDecoder.drain``), and
making the send batch frames a writer makes."""

from __future__ import annotations

from ergo_py import gen
from ergo_py.gen import PID, Alias, ProcessID
from ergo_py.net import frames as fr

_SEND_CLASS: dict[type, type] = {PID: fr.SendPID, ProcessID: fr.SendName, Alias: fr.SendAlias}


def drained(data: bytes, dec: fr.FrameDecoder | None = None) -> list[fr.Frame]:
    """What one ``drain`` yields after ``data`` is fed to ``dec`` (or a fresh decoder)."""
    if dec is None:
        dec = fr.FrameDecoder()
    dec.receive_data(data)
    out: list[fr.Frame] = []
    dec.drain(out)
    return out


def flat(frames: list[fr.Frame]) -> list[fr.Frame]:
    """``frames`` with each send batch (``gen.SendBatch``) as the plain send tuples of
    its messages, in order: what the batch stands for."""
    out: list[fr.Frame] = []
    for f in frames:
        if type(f) is gen.SendBatch:
            out.extend((f.sender, f.to, m) for m in f.messages)
        else:
            out.append(f)
    return out


def run_frame(
    enc: fr.FrameEncoder,
    sender: PID,
    to: PID | ProcessID | Alias,
    messages: list[object],
    order: int,
) -> bytes:
    """The frame a link's writer makes of ``messages`` sent one after the other from
    ``sender`` to ``to``: a send batch frame, or a plain send frame for one message."""
    items = []
    entry = None
    for m in messages:
        entry, item = enc.send_item(sender, to, m, order)
        items.append(item)
    assert entry is not None
    return fr.send_run(entry, order, items)


def named(frame: fr.Frame) -> fr.Frame:
    """A drained send tuple as its named frame class (the type of ``to`` says which)."""
    if type(frame) is tuple:
        return _SEND_CLASS[type(frame[1])](*frame)  # type: ignore[no-any-return]
    return frame


def read(data: bytes, dec: fr.FrameDecoder | None = None) -> list[fr.Frame]:
    """:func:`drained`, with the sends named, so that they compare by class too."""
    return [named(f) for f in drained(data, dec)]


def as_drained(frames: list[fr.Frame]) -> list[fr.Frame]:
    """What ``drain`` yields for ``frames``: plain tuples for sends, no keepalives,
    nothing after a Close."""
    out: list[fr.Frame] = []
    for f in frames:
        if type(f) is fr.Keepalive:
            continue
        out.append((f[0], f[1], f[2]) if isinstance(f, tuple) else f)
        if type(f) is fr.Close:
            break
    return out
