"""The C CRC-32C of event records: the values of TensorBoard's own pure-Python function, for every length.

Records from 0 bytes to a picture's size, with the lengths where word-at-a-time loops change over (every length up to
66 bytes, around 1 KiB and 4 KiB); then the event files that TensorBoard's writer produces with it, read back by
TensorBoard's reader (which drops every record whose checksums are wrong).
"""

from __future__ import annotations

import random

import google_crc32c
import pytest
from helpers import read_events
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tensorboard_masked_crc32c
from tensorboard.summary.writer import record_writer
from torch.utils.tensorboard import SummaryWriter

from lightning_radam.callbacks._checksum import masked_crc32c, use_fast_checksums

LENGTHS = [*range(0, 67), 1023, 1024, 1025, 1031, 4095, 4096, 4099, 5637, 40_000]


@pytest.mark.parametrize("length", LENGTHS)
def test_checksum_equals_tensorboards(length):
    rng = random.Random(length)  # noqa: S311 (reproducible test data, not a secret)
    for data in (rng.randbytes(length), bytes(length), b"\xff" * length):  # random, all zero bits, all one bits
        assert masked_crc32c(data) == tensorboard_masked_crc32c(data)


def test_checksum_known_value():
    """CRC-32C("123456789") = 0xE3069283 (the check value of the Castagnoli CRC), masked as TFRecord masks it."""
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_tensorboard_writes_readable_files_with_it(tmp_path):
    assert use_fast_checksums()
    assert use_fast_checksums()  # idempotent
    assert record_writer.masked_crc32c is masked_crc32c
    writer = SummaryWriter(str(tmp_path))
    for step in range(3):
        writer.add_scalar("a", float(step), step)
        writer.add_histogram_raw(
            "h", min=0.0, max=3.0, num=6, sum=9.0, sum_squares=17.0, bucket_limits=[1.0, 2.0, 3.0],
            bucket_counts=[1.0, 2.0, 3.0], global_step=step,
        )  # fmt: skip
    writer.close()
    events = read_events(str(tmp_path))  # TensorBoard's reader drops a record whose checksum is wrong
    assert [s.value for s in events.Scalars("a")] == [0.0, 1.0, 2.0]
    assert [h.histogram_value.bucket for h in events.Histograms("h")] == [[1.0, 2.0, 3.0]] * 3


def test_tensorboard_keeps_its_own_checksum_without_the_c_implementation(monkeypatch):
    """google-crc32c's fallback is pure Python as well: TensorBoard's function is then left in place."""
    monkeypatch.setattr(record_writer, "masked_crc32c", tensorboard_masked_crc32c)
    monkeypatch.setattr(google_crc32c, "implementation", "python")
    assert not use_fast_checksums()
    assert record_writer.masked_crc32c is tensorboard_masked_crc32c
