"""A service's log: rotated by size without splitting or losing a line, followed like tail -F."""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlflow_stack.native.logfile import PARTIAL_LIMIT, RotatingLog, follow, parse_size, rotated


def test_rotating_log_keeps_partial_lines_whole_and_gives_a_long_line_its_own_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "svc.log"
    opened: list[int] = []
    writer = RotatingLog(path, max_bytes=100, keep=2, on_open=opened.append)
    writer.write(b"first half")
    assert path.read_bytes() == b""  # an unfinished line waits for its end
    writer.write(b" and its end\n")
    assert path.read_bytes() == b"first half and its end\n"
    writer.write(b"a" * 80 + b"\n")  # would pass 100 bytes: rotate first
    assert rotated(path, 1).read_bytes() == b"first half and its end\n"
    writer.write(b"L" * 300 + b"\n")  # longer than a file: a file of its own, whole
    writer.line("supervisor note")
    writer.write(b"unfinished")
    writer.close()  # ends and writes the unfinished line
    assert path.read_bytes() == b"supervisor note\nunfinished\n"
    assert rotated(path, 1).read_bytes() == b"L" * 300 + b"\n"
    assert rotated(path, 2).read_bytes() == b"a" * 80 + b"\n"
    assert not rotated(path, 3).exists()  # keep=2: the first file is gone
    assert len(opened) == 4  # the supervisor re-points its own output at each new file


def test_parse_size_accepts_binary_units() -> None:
    assert parse_size("10M") == 10 * 2**20
    assert parse_size("512K") == 512 * 1024
    assert parse_size("1GiB") == 2**30
    assert parse_size("4096") == 4096
    for bad in ("ten", "12"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_follow_keeps_following_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    path.write_text("old line\n")
    seen: list[str] = []
    lines = follow(path, interval=0.02)

    def consume() -> None:
        for line in lines:
            seen.append(line)
            if line.startswith("line 0199"):
                return

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    time.sleep(0.3)  # the follower is at the end of the file now
    writer = RotatingLog(path, max_bytes=300, keep=2)
    for i in range(200):
        writer.write(f"line {i:04d}\n".encode())
        if i % 20 == 0:
            time.sleep(0.03)
    writer.close()
    reader.join(10)
    assert [line.strip() for line in seen] == [f"line {i:04d}" for i in range(200)]


def test_logs_follow_on_the_command_line_survives_a_rotation(tmp_path: Path) -> None:
    logs = tmp_path / "data" / "logs"
    logs.mkdir(parents=True)
    path = logs / "mlflow.log"
    path.write_text("before\n")
    follower = subprocess.Popen(
        [sys.executable, "-m", "mlflow_stack", "logs", "mlflow", "-f", "-n", "1",
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "before\n"
        time.sleep(1.5)  # it follows from the end now
        with path.open("a") as handle:
            handle.write("in the old file\n")
        path.rename(rotated(path, 1))
        path.write_text("in the new file\n")
        assert follower.stdout.readline() == "in the old file\n"
        assert follower.stdout.readline() == "in the new file\n"
    finally:
        follower.kill()
        follower.wait(5)


# -- rotation ---------------------------------------------------------------------------------


def lines_of(count: int) -> list[bytes]:
    return [f"line {i:05d} ".encode() + b"x" * (i * 7 % 61) + b"\n" for i in range(count)]


def all_files(path: Path, keep: int) -> list[Path]:
    """The log's files, oldest first."""
    return [rotated(path, i) for i in range(keep, -1, -1) if rotated(path, i).exists()]


def test_rotation_loses_no_line_and_splits_none_whatever_the_writes_boundaries(
    tmp_path: Path,
) -> None:
    path = tmp_path / "svc.log"
    expected = b"".join(lines_of(2000))
    writer = RotatingLog(path, max_bytes=4096, keep=100)
    position, step = 0, 1
    while position < len(expected):  # chunks of 1, 2, ... 499 bytes: lines cut anywhere
        writer.write(expected[position : position + step])
        position += step
        step = step % 499 + 1
    writer.close()
    files = all_files(path, 100)
    assert len(files) > 20 and not rotated(path, len(files)).exists()
    assert b"".join(f.read_bytes() for f in files) == expected
    for file in files:
        content = file.read_bytes()
        assert len(content) <= 4096 and content.endswith(b"\n")
        assert all(line.startswith(b"line ") for line in content.splitlines())


def test_the_oldest_file_beyond_keep_is_deleted(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    lines = lines_of(500)
    writer = RotatingLog(path, max_bytes=2048, keep=2)
    for line in lines:
        writer.write(line)
    writer.close()
    files = all_files(path, 10)
    assert files == [rotated(path, 2), rotated(path, 1), path]
    kept = b"".join(f.read_bytes() for f in files)
    assert b"".join(lines).endswith(kept)  # the newest lines, a whole number of them
    assert kept.splitlines(keepends=True)[0] in lines


def test_with_keep_zero_the_log_starts_over_when_full(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    writer = RotatingLog(path, max_bytes=1024, keep=0)
    for line in lines_of(300):
        writer.write(line)
        assert path.stat().st_size <= 1024
    writer.close()
    assert list(tmp_path.iterdir()) == [path]
    assert path.read_bytes().splitlines()[-1].startswith(b"line 00299 ")


def test_an_existing_log_is_appended_to_and_counts_towards_its_size(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    path.write_bytes(b"o" * 95 + b"\n")
    writer = RotatingLog(path, max_bytes=100, keep=1)
    writer.write(b"short\n")  # 96 + 6 > 100: the old content moves on first
    writer.close()
    assert rotated(path, 1).read_bytes() == b"o" * 95 + b"\n"
    assert path.read_bytes() == b"short\n"


def test_a_new_log_is_private(tmp_path: Path) -> None:
    RotatingLog(tmp_path / "svc.log").close()
    assert stat.S_IMODE((tmp_path / "svc.log").stat().st_mode) == 0o600


def test_a_line_that_never_ends_is_written_once_it_is_long(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    writer = RotatingLog(path)
    writer.write(b"." * (PARTIAL_LIMIT - 1))
    assert path.read_bytes() == b""
    writer.write(b"..")  # a child printing progress dots without a newline
    assert path.read_bytes() == b"." * (PARTIAL_LIMIT + 1) + b"\n"
    writer.close()


def test_our_own_lines_end_once_and_survive_bad_text(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    writer = RotatingLog(path)
    writer.write(b"child output without end")
    writer.line("supervisor note\n")
    writer.line("surrogate \udcff here")
    writer.close()
    # our line goes in between whole lines of the child's, which waits for its end
    assert path.read_bytes() == (b"supervisor note\nsurrogate ? here\nchild output without end\n")


def test_what_cannot_be_written_is_counted_not_raised(tmp_path: Path) -> None:
    full = tmp_path / "full.log"
    full.symlink_to("/dev/full")  # every write: ENOSPC, as on a full disk
    writer = RotatingLog(full, max_bytes=1 << 20)
    writer.write(b"lost line\n")
    writer.line("lost too")
    writer.close()
    assert writer.dropped == len(b"lost line\n") + len(b"lost too\n")


def test_rotated_names_count_up_from_the_log_itself(tmp_path: Path) -> None:
    log = tmp_path / "mlflow.log"
    names = [rotated(log, i).name for i in range(3)]
    assert names == ["mlflow.log", "mlflow.log.1", "mlflow.log.2"]


# -- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("1K", 1024), ("1.5M", 3 * 2**19), ("10mb", 10 * 2**20), (" 2 G ", 2 * 2**30), ("1kib", 1024)],
)
def test_sizes_may_be_written_in_any_case_with_or_without_b(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a size"),
        ("M", "not a size"),
        ("12MX", "not a size"),
        ("1023", "below 1K"),
        ("-1M", "below 1K"),
        ("nan", "not a size"),
    ],
)
def test_what_is_not_a_usable_size_is_a_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text)


@pytest.mark.parametrize("text", ["inf", "1e400K"])
def test_an_infinite_size_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


# -- following --------------------------------------------------------------------------------


def next_line(lines: Iterator[str], *writes: Callable[[], None], every: float = 0.2) -> str:
    """The next line of a follower blocked waiting for one, while ``writes`` happen, one
    every ``every`` seconds, in another thread."""

    def write_all() -> None:
        for write in writes:
            time.sleep(every)
            write()

    writer = threading.Thread(target=write_all)
    writer.start()
    try:
        return next(lines)
    finally:
        writer.join()


def append(path: Path, text: str) -> Callable[[], None]:
    def write() -> None:
        with path.open("a") as handle:
            handle.write(text)

    return write


@pytest.fixture
def followers() -> Iterator[Callable[[Path], Iterator[str]]]:
    made: list[Iterator[str]] = []

    def start(path: Path) -> Iterator[str]:
        made.append(follow(path, interval=0.02))
        return made[-1]

    yield start
    for lines in made:
        lines.close()  # type: ignore[attr-defined]


def test_follow_starts_at_the_end_and_reads_a_rotated_file_to_its_end_first(
    tmp_path: Path, followers: Callable[[Path], Iterator[str]]
) -> None:
    path = tmp_path / "svc.log"
    path.write_text("written before\n")
    lines = followers(path)
    assert next_line(lines, append(path, "first\n")) == "first\n"
    append(path, "last of the old file\n")()
    path.rename(rotated(path, 1))
    path.write_text("first of the new file\n")
    assert next(lines) == "last of the old file\n"
    assert next(lines) == "first of the new file\n"


def test_follow_starts_over_when_the_log_is_truncated_in_place(
    tmp_path: Path, followers: Callable[[Path], Iterator[str]]
) -> None:
    path = tmp_path / "svc.log"
    path.write_text("an old line\n")
    lines = followers(path)
    assert next_line(lines, append(path, "a newer line\n")) == "a newer line\n"
    path.write_text("truncated\n")  # copytruncate, or `: > svc.log`
    assert next(lines) == "truncated\n"


def test_follow_waits_for_a_log_that_is_not_there_yet(
    tmp_path: Path, followers: Callable[[Path], Iterator[str]]
) -> None:
    path = tmp_path / "svc.log"
    lines = followers(path)

    def appear() -> None:
        staged = tmp_path / "staged"
        staged.write_text("earlier\n")
        staged.rename(path)

    assert next_line(lines, appear, append(path, "later\n")) in ("earlier\n", "later\n")


def test_follow_shows_a_new_log_from_its_first_line(
    tmp_path: Path, followers: Callable[[Path], Iterator[str]]
) -> None:
    path = tmp_path / "svc.log"
    lines = followers(path)

    def appear() -> None:
        staged = tmp_path / "staged"
        staged.write_text("first line of a new log\n")
        staged.rename(path)  # whole at once: no moment at which it is there but empty

    first = next_line(lines, appear, append(path, "second line\n"))
    assert first == "first line of a new log\n"
