"""A full sync's progress (pirsyncd.replica.progress): rsync's progress2 lines read in chunks cut
anywhere, and the figures made of them on a plain-number clock."""

from __future__ import annotations

import random
import re

import pytest

from pirsyncd.replica.progress import (
    ETA_AFTER,
    FullSyncProgress,
    ProgressParser,
    ProgressSample,
    describe_progress,
)

PROGRESS_LINE = re.compile(rb"^\s*([\d,]+)\s+(\d+)%\s+\S+/s\s+[\d:]+(?:\s+\(xfr#\d+, (ir|to)-chk=(\d+)/(\d+)\))?\s*$")

# What rsync 3.2.7 prints with -a --stats --info=progress2 under LC_ALL=C (lines end in \r).
OUTPUT = (b"\r         20,000   0%    0.00kB/s    0:00:00  "
          b"\r         20,000   0%    0.00kB/s    0:00:00 (xfr#1, ir-chk=999/1021)"
          b"\r      2,000,000  10%    5.76MB/s    0:00:00 (xfr#100, ir-chk=900/1500)"
          b"\r      4,000,000  20%    5.07MB/s    0:00:00 (xfr#200, to-chk=800/2000)"
          b"\r     20,000,000 100%    5.07MB/s    0:00:03 (xfr#1000, to-chk=0/2000)\n"
          b"\nNumber of files: 2,000 (reg: 1,000, dir: 21)\nNumber of regular files transferred: 1,000\n"
          b"Total bytes sent: 20,014,121\n\nsent 20,014,121 bytes  received 32 bytes  28,306.00 bytes/sec\n")


def read_all(chunks: list[bytes]) -> tuple[bytes, list[ProgressSample]]:
    parser = ProgressParser()
    kept, samples = b"", []
    for chunk in [*chunks, b""]:
        text, sample = parser.feed(chunk)
        kept += text
        if sample is not None:
            samples.append(sample)
    return kept, samples


@pytest.mark.parametrize("size", [1, 7, 64, len(OUTPUT)])
def test_progress_lines_are_taken_out_and_the_rest_kept_however_the_output_is_cut(size: int) -> None:
    kept, samples = read_all([OUTPUT[start:start + size] for start in range(0, len(OUTPUT), size)])
    assert kept == OUTPUT[OUTPUT.index(b"\nNumber"):]
    assert samples[-1] == ProgressSample(20_000_000, 2000, 2000, True)
    if size == len(OUTPUT):
        assert len(samples) == 1  # only the latest of a chunk counts
    else:
        assert ProgressSample(2_000_000, 600, 1500, False) in samples


def test_a_line_without_the_file_counts_keeps_the_last_counts() -> None:
    parser = ProgressParser()
    _, sample = parser.feed(b"\r  10  0%  0.00kB/s  0:00:00 (xfr#1, to-chk=5/10)\r  99  0%  1.00kB/s  0:00:00  \r")
    assert sample == ProgressSample(99, 5, 10, True)


def test_a_long_unterminated_line_that_is_no_progress_is_kept() -> None:
    parser = ProgressParser()
    kept, sample = parser.feed(b"x" * 70000)
    assert (len(kept), sample) == (70000, None)


def test_the_percent_waits_for_a_total_that_means_something_and_never_goes_backwards() -> None:
    progress = FullSyncProgress("initial", 0.0, 1000.0)
    progress.new_attempt()
    progress.observe(ProgressSample(1000, 90, 100, False), 1.0)
    assert progress.percent is None, "rsync still lists: 90 of 100 says nothing"
    assert describe_progress(progress.snapshot(1.0)).startswith("initial sync: 90 of 100+ files (rsync still lists)")
    progress.observe(ProgressSample(2000, 100, 1000, True), 2.0)
    assert progress.percent == 10
    progress.observe(ProgressSample(1500, 80, 1000, True), 3.0)  # an odd sample: nothing goes back
    view = progress.snapshot(3.0)
    assert (view["percent"], view["files_done"], view["files_total"], view["bytes"]) == (10, 100, 1000, 2000)
    progress.observe(ProgressSample(9000, 1000, 1000, True), 4.0)
    assert progress.percent == 99, "100 only once the sync has succeeded"
    progress.finish(5.0)
    view = progress.snapshot(5.0)
    assert (view["percent"], view["active"], view["finished"], view["eta_s"]) == (100, False, 1005.0, None)


def test_an_earlier_full_sync_gives_the_estimate_while_rsync_lists() -> None:
    progress = FullSyncProgress("periodic", 0.0, 0.0, expected_total=1000)
    progress.new_attempt()
    progress.observe(ProgressSample(0, 250, 300, False), 1.0)
    assert (progress.percent, progress.total) == (25, 1000)
    progress.observe(ProgressSample(0, 1100, 1200, False), 2.0)  # the tree grew: rsync's count wins
    assert (progress.percent, progress.total) == (91, 1200)


def test_the_eta_comes_after_some_seconds_and_one_percent_from_the_recent_rate() -> None:
    progress = FullSyncProgress("initial", 0.0, 0.0)
    progress.new_attempt()
    for second in range(0, int(ETA_AFTER)):
        progress.observe(ProgressSample(second * 1_000_000, second * 10, 10_000, True), float(second))
        assert progress.eta(float(second)) is None
    progress.observe(ProgressSample(10_000_000, 100, 10_000, True), ETA_AFTER)
    view = progress.snapshot(ETA_AFTER)
    assert view["eta_s"] == 990  # 9,900 entries left at 10 a second
    assert view["rate"] == 1_000_000
    assert describe_progress(view) == "initial sync: 1% · 100 of 10,000 files · 977 KiB/s · ETA 16m 30s"


def test_a_retried_full_sync_goes_on_from_the_figures_it_had() -> None:
    progress = FullSyncProgress("overflow", 0.0, 0.0)
    progress.new_attempt()
    progress.observe(ProgressSample(5000, 50, 100, True), 1.0)
    progress.new_attempt()  # rsync failed; the retry starts from 0 again
    progress.observe(ProgressSample(100, 10, 100, True), 2.0)
    assert (progress.percent, progress.checked, progress.bytes_done) == (50, 50, 5100)
    progress.observe(ProgressSample(300, 70, 100, True), 3.0)
    assert (progress.percent, progress.checked, progress.bytes_done) == (70, 70, 5300)


class PlainReading:
    """The reference: every segment read one by one (what ProgressParser did before it read
    a chunk in one pass of the regular expression engine and its last lines only)."""

    def __init__(self) -> None:
        self.partial = b""

    def feed(self, data: bytes) -> tuple[bytes, ProgressSample | None]:
        text = self.partial + data
        if data:
            cut = max(text.rfind(b"\r"), text.rfind(b"\n")) + 1
            if len(text) - cut > 1 << 16:
                cut = len(text)
            text, self.partial = text[:cut], text[cut:]
        else:
            self.partial = b""
        kept, latest = [], None
        for segment in re.split(rb"(?<=[\r\n])", text):
            if not segment:
                continue
            match = PROGRESS_LINE.match(segment.rstrip(b"\r\n"))
            if match is None:
                if segment.strip(b"\r"):
                    kept.append(segment)
                continue
            bytes_done = int(match[1].replace(b",", b""))
            if match[3] is None:
                latest = ProgressSample(bytes_done, latest.checked if latest else 0,
                                        latest.listed if latest else 0, latest.list_complete if latest else False)
                continue
            left, listed = int(match[4]), int(match[5])
            latest = ProgressSample(bytes_done, max(0, listed - left), listed, match[3] == b"to")
        return b"".join(kept), latest


def random_output(chooser: random.Random) -> bytes:
    """rsync's stdout as it may come: progress lines with and without counts, bare \\r, the
    itemized or stats lines between them, names that look like parts of progress lines."""
    pieces = []
    for _ in range(chooser.randint(0, 60)):
        kind = chooser.random()
        number = f"{chooser.randrange(10**7):,}"
        if kind < 0.45:
            counts = f" (xfr#{chooser.randrange(99)}, {chooser.choice(['ir', 'to'])}-chk={chooser.randrange(50)}/" \
                     f"{chooser.randrange(50, 99)})" if chooser.random() < 0.8 else ""
            pieces.append(f"{chooser.choice(['', ' ', '   '])}{number}  {chooser.randrange(101)}%  1.00MB/s  "
                          f"0:00:0{chooser.randrange(10)}{counts}{chooser.choice(['', ' '])}"
                          + chooser.choice(["\r", "\r", "\n"]))
        elif kind < 0.55:
            pieces.append("\r")
        elif kind < 0.8:
            pieces.append(chooser.choice(["Number of files: 12\n", "deleting a-chk=1/2\n", f"{number}\n",
                                          f"  {number}  5%  x/s  0:00:01 (xfr#1, to-chk=1/2)\n", "\n",
                                          "sent 1 bytes\r\n", "to-chk=3/4\r"]))
        else:
            pieces.append(f"{chooser.choice(['>f+++++++++', 'cd+++++++++'])} dir/x-chk={number}\n")
    return "".join(pieces).encode()


@pytest.mark.parametrize("seed", range(300))
def test_the_parser_reads_as_a_plain_reading_of_every_line_would(seed: int) -> None:
    chooser = random.Random(seed)
    output = random_output(chooser)
    parser, plain = ProgressParser(), PlainReading()
    position = 0
    while True:
        size = chooser.choice([1, 3, 17, 64, 1000])
        chunk = output[position:position + size]
        position += len(chunk)
        assert parser.feed(chunk) == plain.feed(chunk), (output, position)
        if not chunk:
            break
