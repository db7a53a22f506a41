"""The CRC-32C checksums of TensorBoard's event records, in NumPy.

Every record of an event file carries two masked CRC-32C (Castagnoli) checksums, which TensorBoard's writer
(``tensorboard.summary.writer.record_writer``) computes in pure Python, a byte at a time: about 80 ns per byte, in
the writer's thread but holding the GIL, so that a logged step of the monitors (a few kilobytes of histograms and
scalars) waits some hundreds of microseconds for it. :func:`masked_crc32c` gives the same values with one NumPy
gather and one XOR reduction per kilobyte; :func:`use_numpy_checksums` makes TensorBoard's writer use it.

The CRC (reflected, polynomial ``0x82F63B78``, initial and final XOR ``0xFFFFFFFF``) is linear over GF(2) in the
message: with the initial value 0, a message's register is the XOR over its bytes of what each byte leaves after the
zero bytes that follow it, ``_AFTER[d, b]`` for a byte ``b`` followed by ``d`` zero bytes. Longer messages are summed
in blocks of ``_SPAN`` bytes, the register carried from one block to the next through the same table.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["masked_crc32c", "use_numpy_checksums"]

_POLYNOMIAL = 0x82F63B78  # Castagnoli, reflected
_MASK_DELTA = 0xA282EAD8  # TFRecord's mask: rotate right by 15, add this
_SPAN = 1024  # bytes per block: the table is _SPAN x 256 uint32, 1 MiB
_SHORT = 64  # below this many bytes the byte-at-a-time loop is faster than the NumPy calls


def _byte_table() -> list[int]:
    """``T[b]``: the register after the byte ``b`` from the register 0 (the classic CRC table)."""
    crc = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        crc = np.where(crc & 1, (crc >> 1) ^ np.uint32(_POLYNOMIAL), crc >> 1)
    return crc.tolist()


_TABLE = _byte_table()


@functools.cache
def _after() -> tuple[np.ndarray, np.ndarray]:
    """``(_AFTER flattened, row offsets)``: ``_AFTER[d, b]`` is the register left by the byte ``b`` followed by ``d``
    zero bytes, from the register 0; built once, on first use (a few milliseconds)."""
    table = np.asarray(_TABLE, dtype=np.uint32)
    after = np.empty((_SPAN, 256), dtype=np.uint32)
    after[0] = table
    for d in range(1, _SPAN):  # one more zero byte: r -> (r >> 8) ^ T[r & 0xFF]
        after[d] = (after[d - 1] >> 8) ^ table[after[d - 1] & 0xFF]
    offsets = np.arange(_SPAN - 1, -1, -1, dtype=np.intp) * 256  # offsets[-n:] are the rows of distances n-1 .. 0
    return after.reshape(-1), offsets


def _bytewise(register: int, data: bytes | memoryview) -> int:
    for byte in data:
        register = _TABLE[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _crc32c(data: bytes) -> int:
    if len(data) < _SHORT:
        return _bytewise(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    after, offsets = _after()
    message = np.frombuffer(data, dtype=np.uint8)
    register = 0xFFFFFFFF
    for start in range(0, message.size, _SPAN):
        block = message[start : start + _SPAN]
        n = block.size
        if n < 4:  # too short to carry the register through the table: byte by byte
            register = _bytewise(register, memoryview(data)[start:])
            break
        # the register after n zero bytes (each of its 4 bytes is a byte followed by n - 1 - j zero bytes), XOR the
        # block's own contribution from the register 0
        carried = 0
        for j in range(4):
            carried ^= int(after[(n - 1 - j) * 256 + ((register >> (8 * j)) & 0xFF)])
        register = carried ^ int(np.bitwise_xor.reduce(after[offsets[-n:] + block]))
    return register ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C of ``data``, as TFRecord and TensorBoard's event files store it.

    Args:
        data: the bytes of a record's length field or of its payload.

    Returns:
        The checksum as an int in ``[0, 2**32)``: the same as
        ``tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c(data)``.

    Example:
        >>> hex(masked_crc32c(b"123456789"))  # CRC-32C("123456789") = 0xE3069283, masked
        '0xc78ab0e5'
    """
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def use_numpy_checksums() -> bool:
    """Make TensorBoard's event-file writer checksum records with :func:`masked_crc32c` (the same values, for the
    whole process). Done only where the writer still uses TensorBoard's pure-Python function; idempotent.

    Returns:
        Whether TensorBoard's writer now uses :func:`masked_crc32c`.

    Example:
        >>> use_numpy_checksums()
        True
    """
    try:
        from tensorboard.compat.tensorflow_stub import pywrap_tensorflow  # type: ignore[import-untyped]
        from tensorboard.summary.writer import record_writer  # type: ignore[import-untyped]
    except ImportError:  # another TensorBoard layout: leave it as it is
        return False
    current = getattr(record_writer, "masked_crc32c", None)
    if current is pywrap_tensorflow.masked_crc32c:
        record_writer.masked_crc32c = masked_crc32c
    return record_writer.masked_crc32c is masked_crc32c
