"""Local `datasets` sources as users save them: a file with a byte-order mark reads as any other;
a malformed one is refused with the bad lines by number (counted from 1) or where its JSON
breaks, and nothing else is said (no hub advice for a local file, no library log lines)."""

from __future__ import annotations

import logging

import pytest

from core.datasource import load_rows
from core.errors import SourceError


def test_a_file_saved_with_a_byte_order_mark_reads_like_any_other(tmp_path):
    from eval.sets import load_jsonl

    rows = '{"user_input": "What is WAL?", "reference": "a log"}\n{"user_input": "And MVCC?"}\n'
    path = tmp_path / "golden.jsonl"
    path.write_bytes(rows.encode("utf-8-sig"))
    table = load_rows(str(path), columns=("user_input",))
    assert table["user_input"] == ["What is WAL?", "And MVCC?"]
    assert [s.user_input for s in load_jsonl(path)] == ["What is WAL?", "And MVCC?"]


def test_bad_lines_are_named_by_number_and_nothing_else_is_logged(tmp_path, caplog):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"q": "a"}\nthis is not json\n\n["a list"]\n{"q": "b"}\n')
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError) as err:
        load_rows(str(path), columns=("q",))
    message = str(err.value)
    assert "2 bad lines: line 2: not JSON (Expecting value); line 4: not a JSON object" in message
    assert "hub" not in message and "row 1" not in message
    assert not [r for r in caplog.records if r.name.startswith("datasets")]


def test_a_broken_json_file_says_where_and_a_broken_csv_says_why(tmp_path):
    broken = tmp_path / "rows.json"
    broken.write_text('[{"q": "a"},\n {"q": "b"')
    with pytest.raises(SourceError, match=r"not JSON at line 2, column 11"):
        load_rows(str(broken))
    listed = tmp_path / "listed.json"
    listed.write_text('[{"q": "a"}, {"q": "b"}]')
    assert load_rows(str(listed))["q"] == ["a", "b"]
    csv = tmp_path / "rows.csv"
    csv.write_text('q,a\n"never closed,1\n')
    with pytest.raises(SourceError, match=r"as CSV \(ParserError: .*EOF inside string") as err:
        load_rows(str(csv))
    assert "hub" not in str(err.value)


def test_text_that_is_not_utf8_says_so(tmp_path):
    from eval.sets import EvalSetError, load_jsonl

    path = tmp_path / "golden.jsonl"
    path.write_bytes(b'{"user_input": "caf\xe9"}\n')
    with pytest.raises(EvalSetError, match=r"not UTF-8 text \(byte 19\); re-save it as UTF-8"):
        load_jsonl(path)


def test_overlapping_quiet_calls_restore_the_level_in_force_before_the_first():
    from core.logs import quiet

    log = logging.getLogger("some.parser")
    log.setLevel(logging.INFO)
    first, second = quiet("some.parser", logging.ERROR), quiet("some.parser", logging.ERROR)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # threads may leave in any order
    assert log.level == logging.ERROR
    second.__exit__(None, None, None)
    assert log.level == logging.INFO


def test_a_local_file_has_one_split_and_json_that_is_not_rows_says_so(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "a"}\n')
    with pytest.raises(SourceError, match="its only split is 'train', not 'test'"):
        load_rows(str(rows), split="test")
    trailing = tmp_path / "config.json"
    trailing.write_text('{\n "a": 1,\n}\n')  # one error, at one place: not a bad line each
    with pytest.raises(SourceError, match=r"not JSON at line 3, column 1 \(Expecting property"):
        load_rows(str(trailing))
    lines = tmp_path / "lines.json"  # JSON Lines saved as .json
    lines.write_text('{"q": "a"}\n{"q": "b\u2028c"}\n')
    assert load_rows(str(lines))["q"] == ["a", "b\u2028c"]
