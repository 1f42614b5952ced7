"""TensorBoard event files without TensorFlow: scalars and PNG images, written and read back.

    writer = EventWriter(results / "tensorboard")
    writer.scalars(epoch, {"val_accuracy": 0.91, "lr": 0.001})
    writer.image("confusion_matrix", png_bytes, epoch)

`tensorboard --logdir results/` then shows every run. The file is TensorFlow's format written by
hand: TFRecord framing (a length, its masked CRC-32C, the payload, its masked CRC-32C) around
`Event` protocol buffers, of which only the fields TensorBoard reads for scalars and images are
encoded. `read_events` parses them back (the tests check a run's file against metrics.jsonl).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Iterator, Mapping

from fmnist_jax.errors import RunError


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = tuple(_crc32c_table())


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# Protocol buffer encoding: just what Event / Summary / Summary.Value / Summary.Image need.

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def _event(step: int, *, summary: bytes | None = None, file_version: str | None = None) -> bytes:
    out = _field(1, 1) + struct.pack("<d", time.time()) + _field(2, 0) + _varint(step)
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if summary is not None:
        out += _bytes_field(5, summary)
    return out


def _scalar_value(tag: str, value: float) -> bytes:
    return _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", value)


def _image_value(tag: str, png: bytes, height: int, width: int) -> bytes:
    image = (_field(1, 0) + _varint(height) + _field(2, 0) + _varint(width) + _field(3, 0) + _varint(4)
             + _bytes_field(4, png))
    return _bytes_field(1, tag.encode()) + _bytes_field(4, image)


class EventWriter:
    """Appends events to one new file in `directory` (created); every write is flushed, so
    TensorBoard follows a run as it trains. A full disk is a RunError naming the file."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot create the TensorBoard folder {self.directory} ({e.strerror}).") from e
        # TensorBoard reads the files of a folder in name order: the time keeps a resumed run's
        # new file after its earlier ones.
        self.path = self.directory / f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}"
        self._write(_event(0, file_version="brain.Event:2"))

    def _write(self, event: bytes) -> None:
        header = struct.pack("<Q", len(event))
        record = header + struct.pack("<I", masked_crc(header)) + event + struct.pack("<I", masked_crc(event))
        try:
            with open(self.path, "ab") as f:
                f.write(record)
        except OSError as e:
            raise RunError(f"cannot write the TensorBoard events {self.path} ({e.strerror}).") from e

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """One event holding every `values` tag at `step`."""
        summary = b"".join(_bytes_field(1, _scalar_value(tag, float(v))) for tag, v in values.items())
        self._write(_event(step, summary=summary))

    def image(self, tag: str, png: bytes, step: int) -> None:
        """A PNG image (its size read from its header) under `tag` at `step`."""
        width, height = struct.unpack(">II", png[16:24])
        self._write(_event(step, summary=_bytes_field(1, _image_value(tag, png, height, width))))


# Reading back ------------------------------------------------------------------------------

def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


def _fields(data: bytes) -> Iterator[tuple[int, int, object]]:
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        elif wire == 2:
            length, i = _read_varint(data, i)
            value, i = data[i:i + length], i + length
        else:
            raise ValueError(f"unsupported protocol buffer wire type {wire}")
        yield number, wire, value


def read_events(path: str | os.PathLike) -> list[dict]:
    """Every event of a file: {"step", "wall_time", "scalars": {tag: value}, "images": {tag: (h, w, png)}}.
    Checks each record's CRCs (ValueError when one is wrong)."""
    data = Path(path).read_bytes()
    events, i = [], 0
    while i < len(data):
        header = data[i:i + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[i + 8:i + 12])[0] != masked_crc(header):
            raise ValueError(f"{path}: a record's length CRC is wrong at byte {i}")
        payload = data[i + 12:i + 12 + length]
        if struct.unpack("<I", data[i + 12 + length:i + 16 + length])[0] != masked_crc(payload):
            raise ValueError(f"{path}: a record's data CRC is wrong at byte {i}")
        i += 16 + length
        event = {"step": 0, "wall_time": 0.0, "scalars": {}, "images": {}}
        for number, _, value in _fields(payload):
            if number == 1:
                event["wall_time"] = struct.unpack("<d", value)[0]
            elif number == 2:
                event["step"] = value
            elif number == 5:
                for _, _, raw in _fields(value):
                    fields = {n: v for n, _, v in _fields(raw)}
                    tag = fields[1].decode()
                    if 2 in fields:
                        event["scalars"][tag] = struct.unpack("<f", fields[2])[0]
                    if 4 in fields:
                        image = {n: v for n, _, v in _fields(fields[4])}
                        event["images"][tag] = (image[1], image[2], image[4])
        events.append(event)
    return events
