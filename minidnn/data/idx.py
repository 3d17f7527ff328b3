"""The IDX file format of LeCun's MNIST distribution (and Fashion-MNIST).

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension,
then the array itself in C order, big-endian::

    magic = 0x00 0x00 <type code> <ndim>
    dims  = ndim x uint32 (big-endian)
    data  = prod(dims) x itemsize bytes

Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64 (http://yann.lecun.com/exdb/mnist/, bottom of the page).
Files may be gzip-compressed; that is detected from the gzip magic bytes
1f 8b, not from the file name.
"""
from __future__ import annotations

import gzip as gzip_module
import os
import struct

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"

TYPE_CODE_TO_DTYPE = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
DTYPE_TO_TYPE_CODE = {dtype.newbyteorder("="): code
                      for code, dtype in TYPE_CODE_TO_DTYPE.items()}


class IDXError(ValueError):
    """An IDX file is malformed; the message names the file and the defect."""


def _describe_code(code: int) -> str:
    known = ", ".join(f"0x{c:02X} ({d.name})" for c, d in TYPE_CODE_TO_DTYPE.items())
    return f"unsupported type code 0x{code:02X}; known codes are {known}"


def parse_idx(payload: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the (already decompressed) bytes of an IDX file.

    Returns an array in native byte order with the file's dtype and shape.
    Raises IDXError when the magic number, the type code, the dimensions or
    the total length do not agree.
    """
    if len(payload) < 4:
        raise IDXError(f"{name}: truncated header: expected at least 4 bytes "
                       f"for the magic number, got {len(payload)}")
    zero0, zero1, code, ndim = payload[0], payload[1], payload[2], payload[3]
    if zero0 != 0 or zero1 != 0:
        raise IDXError(f"{name}: bad magic number {payload[:4].hex()}: an IDX "
                       f"file starts with two zero bytes, then the type code "
                       f"and the number of dimensions (e.g. 00000803 for "
                       f"uint8 images); is this an IDX file?")
    if code not in TYPE_CODE_TO_DTYPE:
        raise IDXError(f"{name}: {_describe_code(code)}")
    if ndim == 0:
        raise IDXError(f"{name}: bad magic number {payload[:4].hex()}: "
                       f"number of dimensions is 0")
    header_size = 4 + 4 * ndim
    if len(payload) < header_size:
        raise IDXError(f"{name}: truncated header: {ndim} dimensions need "
                       f"{header_size} header bytes, got {len(payload)}")
    shape = struct.unpack(f">{ndim}I", payload[4:header_size])
    dtype = TYPE_CODE_TO_DTYPE[code]
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(payload) < expected:
        raise IDXError(f"{name}: truncated: the header declares shape {shape} "
                       f"of {dtype.name}, so expected {expected} bytes, got "
                       f"{len(payload)}")
    if len(payload) > expected:
        raise IDXError(f"{name}: {len(payload) - expected} trailing bytes: "
                       f"the header declares shape {shape} of {dtype.name}, "
                       f"so expected {expected} bytes, got {len(payload)}")
    array = np.frombuffer(payload, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_payload(path: str | os.PathLike) -> bytes:
    """The decompressed bytes of an IDX file, gzip detected by magic bytes."""
    with open(path, "rb") as stream:
        raw = stream.read()
    if raw[:2] == GZIP_MAGIC:
        try:
            return gzip_module.decompress(raw)
        except (OSError, EOFError, gzip_module.BadGzipFile) as error:
            raise IDXError(f"{os.fspath(path)}: corrupt gzip stream: {error}") from error
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a NumPy array.

    >>> images = read_idx("train-images-idx3-ubyte.gz")   # (60000, 28, 28) uint8
    """
    return parse_idx(read_payload(path), name=os.fspath(path))


def encode_idx(array: np.ndarray) -> bytes:
    """The uncompressed IDX bytes of `array` (header + big-endian data)."""
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in DTYPE_TO_TYPE_CODE:
        supported = ", ".join(sorted(d.name for d in DTYPE_TO_TYPE_CODE))
        raise ValueError(f"write_idx supports dtypes {supported}, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx needs 1 to 255 dimensions, got {array.ndim}")
    code = DTYPE_TO_TYPE_CODE[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=TYPE_CODE_TO_DTYPE[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, gzip: bool = True) -> None:
    """Write `array` as an IDX file, gzip-compressed unless gzip=False.

    The gzip header carries mtime 0, so the same array gives the same bytes.
    """
    payload = encode_idx(array)
    if gzip:
        payload = gzip_module.compress(payload, mtime=0)
    with open(path, "wb") as stream:
        stream.write(payload)
