"""The JSON log lines: one whole line per request, written in atomic writes, each carrying its request's ID."""

import io
import json
import logging
import select
import sys
import time

from churn import logs


def test_the_longest_access_line_fits_one_atomic_write(capsys, caplog):
    caplog.set_level(logging.INFO, logger="churn.access")
    logs.access_lines.flush()
    capsys.readouterr()
    # Characters outside the BMP are the longest in JSON: 12 bytes each. The longest version a float C makes.
    record = logs.RequestRecord("r" * 128, 10**9, f"C={-2.2250738585072014e-308!r}-{'f' * 12}")
    logs.log_request("\U0001f600" * 100, "/\U0001f600" * 10_000, 200, 1e9, record)
    logs.access_lines.flush()
    line = capsys.readouterr().out
    assert len(line.encode()) <= select.PIPE_BUF
    entry = json.loads(line)
    assert entry["truncated"] is True and len(entry["path"]) == logs.MAX_LOGGED_PATH


def test_log_request_writes_one_json_line(capsys, caplog):
    caplog.set_level(logging.INFO, logger="churn.access")  # as configure_logging sets it in the service
    logs.access_lines.flush()
    capsys.readouterr()
    logs.log_request("POST", '/a "b"\n\\c é', 422, 0.0012345, logs.RequestRecord("rid-1", 3, "C=0.1-0123456789ab"))
    assert capsys.readouterr().out == ""  # batched, until a flush
    logs.access_lines.flush()
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1
    entry = json.loads(out)
    assert entry["path"] == '/a "b"\n\\c é'
    assert (entry["status"], entry["duration_ms"], entry["customers"], entry["request_id"]) == (422, 1.234, 3, "rid-1")
    assert entry["model_version"] == "C=0.1-0123456789ab"


def test_access_lines_are_written_in_whole_lines_of_at_most_pipe_buf(monkeypatch):
    writes = []
    monkeypatch.setattr(logs.sys, "stdout", type("Out", (), {"write": writes.append, "flush": lambda self: None})())
    lines = logs.AccessLines()
    sent = [f'{{"n":{i},"pad":"{"x" * (i % 300)}"}}\n' for i in range(500)]
    for line in sent:
        lines.add(line)
    lines.flush()
    assert "".join(writes) == "".join(sent)
    assert len(writes) < len(sent) / 5
    assert all(len(w) <= select.PIPE_BUF and w.endswith("\n") for w in writes)


def test_access_lines_reach_stdout_within_a_second(capsys):
    lines = logs.AccessLines()
    lines.add("one line\n")
    deadline = time.monotonic() + 3 * lines.FLUSH_SECONDS
    out = ""
    while not out and time.monotonic() < deadline:
        time.sleep(0.05)
        out = capsys.readouterr().out
    assert out == "one line\n"


def test_other_log_lines_carry_the_request_id_of_their_request():
    formatter = logs.JsonFormatter()
    record = logging.LogRecord("churn", logging.ERROR, __file__, 1, "went %s", ("wrong",), None)

    def line() -> dict:
        return json.loads(formatter.format(record))

    assert "request_id" not in line()
    token = logs.current_request.set(logs.RequestRecord("rid-2"))
    try:
        assert line()["request_id"] == "rid-2"
    finally:
        logs.current_request.reset(token)


def test_log_lines_go_to_stdout_as_it_is_when_they_are_written(monkeypatch):
    """Not to the stream stdout was at configure_logging: a test runner's capture, replaced and closed by the time
    a library logs from its destructor at exit (py4j's did, after every CI run's summary)."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # configure_logging's change, undone after
    monkeypatch.setattr(root, "level", root.level)
    logs.configure_logging("INFO")
    now = io.StringIO()
    monkeypatch.setattr(sys, "stdout", now)
    logging.getLogger("churn.test").info("written %s", "now")
    assert json.loads(now.getvalue())["message"] == "written now"
