"""The CRC-32C checksums of TensorBoard's event records, in C.

Every record of an event file carries two masked CRC-32C (Castagnoli) checksums, which TensorBoard's writer
(``tensorboard.summary.writer.record_writer``) computes in pure Python, a byte at a time: about 80 ns per byte, holding
the GIL, so that a logged step of the monitors (a few kilobytes of histograms and scalars) waits some hundreds of
microseconds for it. :func:`masked_crc32c` gives the same values through ``google-crc32c`` (C, with the CPU's CRC32
instruction where it has one: well under a microsecond for a record); :func:`use_fast_checksums` makes TensorBoard's
writer use it.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # without its C extension it warns; it is then not used
    import google_crc32c

__all__ = ["masked_crc32c", "use_fast_checksums"]

_MASK_DELTA = 0xA282EAD8  # TFRecord's mask: rotate right by 15, add this


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
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def use_fast_checksums() -> bool:
    """Make TensorBoard's event-file writer checksum records with :func:`masked_crc32c` (the same values, for the
    whole process). Done only where the writer still uses TensorBoard's pure-Python function and ``google-crc32c`` has
    its C implementation (its fallback is pure Python too); idempotent.

    Returns:
        Whether TensorBoard's writer now uses :func:`masked_crc32c`.

    Example:
        >>> use_fast_checksums()
        True
    """
    try:
        from tensorboard.compat.tensorflow_stub import pywrap_tensorflow  # type: ignore[import-untyped]
        from tensorboard.summary.writer import record_writer  # type: ignore[import-untyped]
    except ImportError:  # another TensorBoard layout: leave it as it is
        return False
    current = getattr(record_writer, "masked_crc32c", None)
    if current is pywrap_tensorflow.masked_crc32c and google_crc32c.implementation == "c":
        record_writer.masked_crc32c = masked_crc32c
    return record_writer.masked_crc32c is masked_crc32c
