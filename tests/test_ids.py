"""cohortctl.ids: ID file formats, cleaning, dedupe, and errors naming file and line."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import pytest

from cohortctl import ids as ids_module
from cohortctl.errors import ExitCode, IdFileError, InputError
from cohortctl.ids import IdFileStats, IdList, IdType, read_ids


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8, newlines untouched) to ``tmp_path/name``."""
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def read_error(path: Path | str, **kwargs: object) -> IdFileError:
    """The IdFileError that reading ``path`` raises."""
    with pytest.raises(IdFileError) as info:
        read_ids(path, **kwargs)  # type: ignore[arg-type]
    return info.value


# Every chunk size exercises lines, CRLF pairs, BOMs and quoted fields split across reads.
CHUNKS = [1, 2, 3, 7, 64, None]


# -- newline lists -------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", CHUNKS)
def test_newline_list_trims_skips_blanks_and_counts_duplicates(
    tmp_path: Path, chunk: int | None
) -> None:
    path = write(tmp_path, "ids.txt", "alice\n  bob \n\n\t\ncarol\nalice\nbob\n   \ndave")
    result = read_ids(path, chunk_size=chunk)
    assert result.ids == ["alice", "bob", "carol", "dave"]
    assert result.stats == IdFileStats(
        source=str(path),
        rows=6,
        blank=3,
        duplicates=2,
        unique=4,
        column=None,
        gzip=False,
    )


def test_first_seen_order_is_kept(tmp_path: Path) -> None:
    values = [f"user_{n}" for n in (5, 3, 9, 3, 1, 5, 7, 9, 2)]
    path = write(tmp_path, "ids.txt", "\n".join(values) + "\n")
    assert read_ids(path).ids == ["user_5", "user_3", "user_9", "user_1", "user_7", "user_2"]


def test_order_and_counts_across_dedupe_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ids_module, "_DEDUPE_BATCH", 4)
    values = ["a", "b", "a", "c", "d", "c", "e", "b", "f", "f", "g"]
    path = write(tmp_path, "ids.txt", "\n".join(values))
    result = read_ids(path, chunk_size=5)
    assert result.ids == ["a", "b", "c", "d", "e", "f", "g"]
    assert result.stats.duplicates == 4


@pytest.mark.parametrize("chunk", CHUNKS)
def test_crlf_and_bom(tmp_path: Path, chunk: int | None) -> None:
    path = write(tmp_path, "ids.txt", b"\xef\xbb\xbfu1\r\nu2\r\n\r\nu3\r\n")
    result = read_ids(path, chunk_size=chunk)
    assert result.ids == ["u1", "u2", "u3"]
    assert (result.stats.rows, result.stats.blank) == (3, 1)


def test_leading_blank_lines_are_counted(tmp_path: Path) -> None:
    result = read_ids(write(tmp_path, "ids.txt", "\n\n \nu1\n"))
    assert result.ids == ["u1"]
    assert result.stats.blank == 3


def test_unicode_ids_and_unicode_whitespace(tmp_path: Path) -> None:
    path = write(tmp_path, "ids.txt", "\u00a0josé\u00a0\nżółw\n用户\njosé\n")
    result = read_ids(path)
    assert result.ids == ["josé", "żółw", "用户"]
    assert result.stats.duplicates == 1


def test_spaces_inside_an_id_are_kept(tmp_path: Path) -> None:
    assert read_ids(write(tmp_path, "ids.txt", " ann lee \nbob\n")).ids == ["ann lee", "bob"]


def test_chunk_boundary_inside_a_line(tmp_path: Path) -> None:
    line = "user_" + "x" * 50
    path = write(tmp_path, "ids.txt", f"a\n{line}\nb\n{line}\n")
    result = read_ids(path, chunk_size=8)
    assert result.ids == ["a", line, "b"]
    assert result.stats.duplicates == 1


def test_chunk_boundary_via_module_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids_module, "CHUNK_SIZE", 3)
    path = write(tmp_path, "ids.txt", "first_id\nsecond_id\r\nfirst_id\n")
    assert read_ids(path).ids == ["first_id", "second_id"]


@pytest.mark.parametrize("header", ["user_id", "ID", "Amplitude_Id"])
def test_known_header_on_a_newline_list(tmp_path: Path, header: str) -> None:
    result = read_ids(write(tmp_path, "ids.txt", f"{header}\n101\n102\n"))
    assert result.ids == ["101", "102"]
    assert result.stats.column == header
    assert result.stats.rows == 2


def test_column_option_names_a_one_column_header(tmp_path: Path) -> None:
    result = read_ids(write(tmp_path, "ids.txt", "email\na@x.io\nb@x.io\n"), column="email")
    assert result.ids == ["a@x.io", "b@x.io"]
    assert result.stats.column == "email"


def test_column_option_that_differs_from_a_known_header(tmp_path: Path) -> None:
    error = read_error(write(tmp_path, "ids.txt", "user_id\nu1\n"), column="email")
    assert error.line == 1
    assert "'email' not found" in error.reason
    assert "'user_id'" in error.reason


def test_column_option_on_a_list_without_header(tmp_path: Path) -> None:
    error = read_error(write(tmp_path, "ids.txt", "u1\nu2\n"), column="email")
    assert error.line == 1
    assert "'email' not found" in error.reason
    assert "no header" in error.reason


# -- CSV / TSV -----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", CHUNKS)
def test_quoted_csv(tmp_path: Path, chunk: int | None) -> None:
    text = 'name,user_id\n"Lee, Ann",u1\n"say ""hi""","u,2"\r\n,\nBob,u1\n'
    result = read_ids(write(tmp_path, "users.csv", text), chunk_size=chunk)
    assert result.ids == ["u1", "u,2"]
    assert result.stats == IdFileStats(
        source=str(tmp_path / "users.csv"),
        rows=3,
        blank=1,
        duplicates=1,
        unique=2,
        column="user_id",
        gzip=False,
    )


def test_tsv_by_extension_and_by_content(tmp_path: Path) -> None:
    text = "user_id\tname\nu1\tAnn, Lee\nu2\tBob\n"
    assert read_ids(write(tmp_path, "users.tsv", text)).ids == ["u1", "u2"]
    assert read_ids(write(tmp_path, "users.txt", text)).ids == ["u1", "u2"]


def test_csv_detected_by_content_without_extension(tmp_path: Path) -> None:
    result = read_ids(write(tmp_path, "export", "amplitude_id,user_id\n1,u1\n2,\n3,u1\n"))
    assert result.ids == ["u1"]
    assert result.stats.column == "user_id"
    assert (result.stats.rows, result.stats.blank, result.stats.duplicates) == (2, 1, 1)


def test_known_column_follows_the_id_type(tmp_path: Path) -> None:
    path = write(tmp_path, "export.csv", '"amplitude_id","user_id"\n11,u1\n12,u2\n')
    assert read_ids(path).ids == ["u1", "u2"]
    result = read_ids(path, id_type=IdType.amplitude)
    assert result.ids == ["11", "12"]
    assert result.stats.column == "amplitude_id"


def test_column_option_picks_the_column(tmp_path: Path) -> None:
    path = write(tmp_path, "users.csv", "user_id,email\nu1,a@x.io\nu2,b@x.io\n")
    result = read_ids(path, column="email")
    assert result.ids == ["a@x.io", "b@x.io"]
    assert result.stats.column == "email"
    assert read_ids(path, column="EMAIL").stats.column == "email"


def test_only_column_is_used_in_a_csv(tmp_path: Path) -> None:
    result = read_ids(write(tmp_path, "users.csv", "customer\nc1\nc2\n"))
    assert result.ids == ["c1", "c2"]
    assert result.stats.column == "customer"


def test_missing_column_names_file_line_and_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "users.csv", "user_id,email\nu1,a@x.io\n")
    error = read_error(path, column="phone")
    assert error.source == str(path)
    assert error.line == 1
    assert "'phone' not found" in error.reason
    assert "'user_id'" in error.reason and "'email'" in error.reason
    assert str(error).startswith(f"{path}:1: ")


def test_several_columns_and_no_known_one(tmp_path: Path) -> None:
    error = read_error(write(tmp_path, "users.csv", "name,email\nAnn,a@x.io\n"))
    assert error.line == 1
    assert "--column" in error.reason
    assert "'name'" in error.reason and "'email'" in error.reason


@pytest.mark.parametrize("chunk", [1, None])
def test_ragged_row_names_its_line(tmp_path: Path, chunk: int | None) -> None:
    path = write(tmp_path, "users.csv", "user_id,email\nu1,a@x.io\n\nu2\nu3,c@x.io\n")
    error = read_error(path, chunk_size=chunk)
    assert error.line == 4
    assert "ragged" in error.reason


def test_quoted_newline_in_an_id_is_a_control_character(tmp_path: Path) -> None:
    error = read_error(write(tmp_path, "users.csv", 'user_id,n\n"u\n1",x\n'))
    assert "control character U+000A" in error.reason
    assert error.line == 3


def test_csv_tab_inside_an_id(tmp_path: Path) -> None:
    error = read_error(write(tmp_path, "users.csv", 'user_id,n\nu1,x\n"u\t2",y\n'))
    assert error.line == 3
    assert "U+0009" in error.reason


# -- gzip and stdin ------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, None])
def test_gzip_file(tmp_path: Path, chunk: int | None) -> None:
    path = write(tmp_path, "ids.csv.gz", gzip.compress(b"user_id,x\nu1,a\nu2,b\nu1,c\n"))
    result = read_ids(path, chunk_size=chunk)
    assert result.ids == ["u1", "u2"]
    assert result.stats.gzip is True
    assert result.stats.column == "user_id"


def test_gzip_detected_by_magic_bytes_not_extension(tmp_path: Path) -> None:
    result = read_ids(write(tmp_path, "ids.txt", gzip.compress(b"u1\nu2\n")))
    assert result.ids == ["u1", "u2"]
    assert result.stats.gzip is True


def test_multi_member_gzip(tmp_path: Path) -> None:
    data = gzip.compress(b"u1\nu2\n") + gzip.compress(b"u3\nu1\n")
    assert read_ids(write(tmp_path, "ids.gz", data)).ids == ["u1", "u2", "u3"]


def test_stdin(tmp_path: Path) -> None:
    result = read_ids("-", stdin=io.BytesIO(b"u1\r\nu2\r\nu1\r\n"))
    assert result.ids == ["u1", "u2"]
    assert result.stats.source == "<stdin>"
    assert result.stats.duplicates == 1


@pytest.mark.parametrize("chunk", [1, None])
def test_gzip_on_stdin(chunk: int | None) -> None:
    stdin = io.BytesIO(gzip.compress(b"\xef\xbb\xbfuser_id\nu1\nu2\n"))
    result = read_ids("-", stdin=stdin, chunk_size=chunk)
    assert result.ids == ["u1", "u2"]
    assert result.stats.gzip is True
    assert result.stats.column == "user_id"


def test_stdin_defaults_to_sys_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.TextIOWrapper(io.BytesIO(b"u1\nu2\n"))
    monkeypatch.setattr("sys.stdin", fake)
    assert read_ids("-").ids == ["u1", "u2"]


def test_corrupt_gzip(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(b"u1\nu2\n" * 100))
    data[20:30] = b"\x00" * 10
    error = read_error(write(tmp_path, "ids.gz", bytes(data)))
    assert "gzip" in error.reason


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(b"u1\nu2\n" * 100)
    error = read_error(write(tmp_path, "ids.gz", data[: len(data) // 2]))
    assert "gzip" in error.reason


# -- Amplitude ids -------------------------------------------------------------------------


def test_amplitude_ids_must_be_integers(tmp_path: Path) -> None:
    path = write(tmp_path, "ids.txt", "101\n 102 \n\n10x3\n")
    error = read_error(path, id_type=IdType.amplitude)
    assert error.line == 4
    assert "not an integer Amplitude id" in error.reason
    assert "'10x3'" in error.reason


def test_amplitude_ids_accepted(tmp_path: Path) -> None:
    result = read_ids(write(tmp_path, "ids.txt", "101\r\n102\r\n101\r\n"), id_type="amplitude")  # type: ignore[arg-type]
    assert result.ids == ["101", "102"]


@pytest.mark.parametrize("bad", ["-5", "1.0", "١٢"])
def test_amplitude_ids_reject_signs_decimals_and_non_ascii_digits(tmp_path: Path, bad: str) -> None:
    error = read_error(write(tmp_path, "ids.txt", f"1\n{bad}\n"), id_type=IdType.amplitude)
    assert error.line == 2


def test_amplitude_ids_in_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "ids.csv", "amplitude_id,user_id\n1,a\nx,b\n")
    error = read_error(path, id_type=IdType.amplitude)
    assert error.line == 3
    assert "not an integer Amplitude id" in error.reason


# -- bad files -----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 4, None])
def test_invalid_utf8_names_its_line(tmp_path: Path, chunk: int | None) -> None:
    path = write(tmp_path, "ids.txt", b"u1\nu2\n\nu\xff3\nu4\n")
    error = read_error(path, chunk_size=chunk)
    assert error.line == 4
    assert "invalid UTF-8" in error.reason
    assert "0xff" in error.reason


def test_invalid_utf8_in_a_csv(tmp_path: Path) -> None:
    error = read_error(write(tmp_path, "ids.csv", b"user_id\nu1\nu\xc3(\n"))
    assert error.line == 3


def test_invalid_utf8_in_the_first_line(tmp_path: Path) -> None:
    assert read_error(write(tmp_path, "ids.txt", b"\xc0\xafu1\n")).line == 1


def test_utf16_is_named(tmp_path: Path) -> None:
    error = read_error(write(tmp_path, "ids.txt", "u1\nu2\n".encode("utf-16")))
    assert "UTF-16" in error.reason


@pytest.mark.parametrize(
    ("text", "line", "label"),
    [
        ("u1\nu\x002\n", 2, "U+0000"),
        ("u1\n\nu2\x07\n", 3, "U+0007"),
        ("u1\nu\x7f\n", 2, "U+007F"),
        ("u1\nu2\nu\t3\n", 3, "U+0009"),
        ("u1\nu\r2\r\n", 2, "U+000D"),
        ("\x0b\nu1\n", 1, "U+000B"),
    ],
)
@pytest.mark.parametrize("chunk", [2, None])
def test_control_character_names_its_line(
    tmp_path: Path, text: str, line: int, label: str, chunk: int | None
) -> None:
    error = read_error(write(tmp_path, "ids.txt", text), chunk_size=chunk)
    assert error.line == line
    assert f"control character {label}" in error.reason


def test_empty_file(tmp_path: Path) -> None:
    error = read_error(write(tmp_path, "ids.txt", b""))
    assert error.line is None
    assert "no ids" in error.reason and "empty" in error.reason


def test_bom_only_file_is_empty(tmp_path: Path) -> None:
    assert "empty" in read_error(write(tmp_path, "ids.txt", b"\xef\xbb\xbf")).reason


def test_only_blank_lines(tmp_path: Path) -> None:
    error = read_error(write(tmp_path, "ids.txt", "\n  \r\n\t\n"))
    assert "only blank lines" in error.reason


@pytest.mark.parametrize(
    ("name", "text"), [("ids.txt", "user_id\n\n"), ("ids.csv", "user_id,x\n,\n")]
)
def test_only_a_header(tmp_path: Path, name: str, text: str) -> None:
    assert "only a header" in read_error(write(tmp_path, name, text)).reason


def test_empty_stdin() -> None:
    error = read_error("-", stdin=io.BytesIO(b""))
    assert error.source == "<stdin>"


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.txt"
    error = read_error(path)
    assert error.source == str(path)
    assert "not found" in error.reason
    assert error.exit_code == ExitCode.USAGE
    assert isinstance(error, InputError)


def test_directory(tmp_path: Path) -> None:
    assert "directory" in read_error(tmp_path).reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "ids.txt", "u1\n")
    path.chmod(0)
    try:
        assert "permission denied" in read_error(path).reason
    finally:
        path.chmod(0o600)


def test_overlong_line_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids_module, "MAX_LINE_BYTES", 16)
    error = read_error(write(tmp_path, "ids.txt", "u1\n" + "x" * 40 + "\n"), chunk_size=4)
    assert error.line == 2
    assert "longer than" in error.reason


def test_pathlike_and_str_sources(tmp_path: Path) -> None:
    path = write(tmp_path, "ids.txt", "u1\n")
    assert read_ids(str(path)).ids == read_ids(path).ids == ["u1"]
    assert isinstance(read_ids(path), IdList)


# -- agreement with the benchmark's baseline ----------------------------------------------


@pytest.mark.parametrize("variant", ["lf", "crlf", "padded"])
def test_agrees_with_a_naive_loop_on_benchmark_data(tmp_path: Path, variant: str) -> None:
    from benchmarks.ingest import generate

    path = tmp_path / "ids.txt"
    generate(path, 20_000, variant)
    expected: dict[str, None] = {}
    rows = 0
    with open(path, encoding="utf-8-sig") as lines:
        for line in lines:
            value = line.strip()
            if value:
                rows += 1
                expected.setdefault(value)
    result = read_ids(path, chunk_size=4096)
    assert result.ids == list(expected)
    assert result.stats.rows == rows
    assert result.stats.duplicates == rows - len(expected) > 0
    assert result.stats.blank > 0


def test_spans_and_chunked_cut_consecutive_runs_the_last_one_short() -> None:
    from cohortctl.ids import chunked, spans

    assert list(spans(5, 2)) == [(0, 2), (2, 4), (4, 5)]
    assert list(spans(0, 3)) == []
    assert list(chunked(["a", "b", "c"], 2)) == [["a", "b"], ["c"]]
    with pytest.raises(InputError, match="batch size must be at least 1"):
        list(chunked(["a"], 0))
