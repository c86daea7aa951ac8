"""A GGUF header read from a memory map: metadata values kept, arrays skipped, tensor sizes.

Byte layout per ggml's docs/gguf.md, with the `gguf` package's constants (magic, value
types, quantisation block sizes). Both byte orders are read, as gguf's own reader does.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Any

from worker import gguf_constants

gguf = gguf_constants.load()  # not `import gguf`: see worker/gguf_constants.py

MAX_KV = 1 << 16           # metadata pairs a header may declare
MAX_TENSORS = 1 << 20      # tensors a header may declare
MAX_DIMS = 8               # GGML_MAX_DIMS is 4; room to spare
MAX_NESTING = 4            # arrays of arrays: no model key uses them
DEFAULT_ALIGNMENT = 32     # tensor data starts at a multiple of general.alignment
_ENDS_EARLY = "its GGUF header ends early"

_V = gguf.GGUFValueType
_SCALAR = {_V.UINT8: "B", _V.INT8: "b", _V.UINT16: "H", _V.INT16: "h", _V.UINT32: "I",
           _V.INT32: "i", _V.FLOAT32: "f", _V.BOOL: "?", _V.UINT64: "Q", _V.INT64: "q",
           _V.FLOAT64: "d"}


@dataclass(frozen=True, slots=True)
class Array:
    """An array value skipped over: only its length is kept."""

    length: int


class Truncated(Exception):
    """The header or tensor data claims more bytes than the file holds: the rest of a sentence."""


class BadHeader(Exception):
    """Not a GGUF header, or one this reader cannot read: the rest of a sentence."""


class Header:
    """A cursor over a GGUF header: metadata values kept, arrays skipped, tensors sized."""

    def __init__(self, buf: mmap.mmap):
        self.buf, self.pos, self.end = buf, 0, len(buf)

    def read(self) -> tuple[dict[str, Any], list[tuple[str, int]]]:
        if self._unpack("<I") != gguf.GGUF_MAGIC:
            raise BadHeader("is not a GGUF file: it does not start with the GGUF magic")
        version = self._unpack("<I")
        swapped = struct.unpack(">I", struct.pack("<I", version))[0]
        if version not in (2, 3) and swapped not in (2, 3):  # big-endian files swap it
            raise BadHeader(f"is GGUF version {min(version, swapped)}, which this reader "
                             "does not read (only 2 and 3)")
        self.order = "<" if version in (2, 3) else ">"
        n_tensors, n_kv = self._unpack("Q"), self._unpack("Q")
        if n_kv > MAX_KV or n_tensors > MAX_TENSORS:
            raise BadHeader(f"has a corrupt GGUF header: {n_kv} metadata pairs and "
                             f"{n_tensors} tensors")
        kv = {}
        for _ in range(n_kv):
            key = self._string()
            kv[key] = self._value(self._unpack("I"))
        tensors = [self._tensor() for _ in range(n_tensors)]
        self._check_data(kv.get("general.alignment", DEFAULT_ALIGNMENT), tensors)
        return kv, [(name, size) for name, size, _ in tensors]

    def _check_data(self, alignment: Any, tensors: list[tuple[str, int, int]]) -> None:
        """The tensor data the header describes must lie wholly inside the file."""
        if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
            raise BadHeader(f"has a corrupt GGUF header: alignment {alignment!r}")
        if not tensors:
            return
        start = -(-self.pos // alignment) * alignment  # as llama.cpp checks at load
        need = start + max(offset + size for _, size, offset in tensors)
        if need > self.end:
            raise Truncated(f"it holds {self.end} of the {need} bytes its header describes")

    def _unpack(self, fmt: str) -> Any:
        fmt = fmt if fmt[0] in "<>" else self.order + fmt
        size = struct.calcsize(fmt)
        if self.pos + size > self.end:
            raise Truncated(_ENDS_EARLY)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def _string(self) -> str:
        n = self._unpack("Q")
        if self.pos + n > self.end:
            raise Truncated(_ENDS_EARLY)
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def _value(self, vtype: int) -> Any:
        if vtype == _V.STRING:
            return self._string()
        if vtype == _V.ARRAY:
            return Array(self._skip_array())
        try:
            return self._unpack(_SCALAR[_V(vtype)])
        except (ValueError, KeyError) as e:
            raise BadHeader(f"has a corrupt GGUF header: unknown value type {vtype}") from e

    def _skip_array(self, depth: int = 0) -> int:
        """Steps over an array; its length."""
        item, n = self._unpack("I"), self._unpack("Q")
        if depth > MAX_NESTING:
            raise BadHeader("has a corrupt GGUF header: arrays nested too deep")
        if item == _V.STRING:
            if n * 8 > self.end - self.pos:
                raise Truncated(_ENDS_EARLY)
            for _ in range(n):
                length = self._unpack("Q")
                self.pos += length
            if self.pos > self.end:
                raise Truncated(_ENDS_EARLY)
        elif item == _V.ARRAY:
            if n * 12 > self.end - self.pos:
                raise Truncated(_ENDS_EARLY)
            for _ in range(n):
                self._skip_array(depth + 1)
        else:
            try:
                size = struct.calcsize(_SCALAR[_V(item)])
            except (ValueError, KeyError) as e:
                raise BadHeader(f"has a corrupt GGUF header: unknown array type {item}") from e
            if self.pos + n * size > self.end:
                raise Truncated(_ENDS_EARLY)
            self.pos += n * size
        return n

    def _tensor(self) -> tuple[str, int, int]:
        """A tensor's name, byte size (0 for a type this gguf does not know) and data offset."""
        name, n_dims = self._string(), self._unpack("I")
        if n_dims > MAX_DIMS:
            raise BadHeader(f"has a corrupt GGUF header: tensor {name} has {n_dims} dimensions")
        elements = 1
        for _ in range(n_dims):
            elements *= self._unpack("Q")
        qtype, offset = self._unpack("I"), self._unpack("Q")
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
        except (ValueError, KeyError):
            return name, 0, offset
        return name, elements // block * type_size, offset
