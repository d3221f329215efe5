import json
import multiprocessing as mp
import os
import signal

import pytest

from leanlm.core.errors import RecordError, UserError
from leanlm.core.records import (
    ResumableJsonlWriter,
    atomic_path,
    publish_dir,
    read_json,
    read_jsonl,
    read_records,
    staging_dir,
    write_json,
    write_jsonl,
)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": \n')
    with pytest.raises(RecordError) as e:
        read_jsonl(p)
    assert e.value.line == 4
    assert str(e.value).startswith(f"{p}:4:")


def test_non_object_line_is_rejected(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(RecordError, match=":2: expected a JSON object"):
        read_jsonl(p)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_json_error_has_line(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('[\n {"a": 1},\n {"a": }\n]')
    with pytest.raises(RecordError) as e:
        read_json(p)
    assert e.value.line == 3


def test_read_records_accepts_list_and_data_key(tmp_path):
    write_json(tmp_path / "a.json", [{"x": 1}])
    write_json(tmp_path / "b.json", {"data": [{"x": 2}]})
    write_jsonl(tmp_path / "c.jsonl", [{"x": 3}])
    assert [read_records(tmp_path / n)[0]["x"] for n in ("a.json", "b.json", "c.jsonl")] == [1, 2, 3]
    write_json(tmp_path / "d.json", {"x": 1})
    with pytest.raises(RecordError, match="expected a JSON list"):
        read_records(tmp_path / "d.json")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "out.json"
    write_json(p, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(p) as f:
        f.write('{"v": 2, "trunc')
        raise RuntimeError("crash mid-write")
    assert json.loads(p.read_text()) == {"v": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_resumable_writer_skips_done_and_drops_torn_line(tmp_path):
    p = tmp_path / "out.jsonl"
    with ResumableJsonlWriter(p) as w:
        w.write({"id": 1, "v": "a"})
        w.write({"id": 2, "v": "b"})
    with p.open("a") as f:
        f.write('{"id": 3, "v": "c')  # a torn line, as a kill mid-write leaves it
    w = ResumableJsonlWriter(p)
    assert set(w.done) == {1, 2} and 3 not in w
    w.write({"id": 3, "v": "c"})
    w.close()
    assert [r["id"] for r in read_jsonl(p)] == [1, 2, 3]


def test_resumable_writer_rejects_record_without_id(tmp_path):
    with ResumableJsonlWriter(tmp_path / "o.jsonl") as w, pytest.raises(ValueError, match="no 'id'"):
        w.write({"v": 1})


def _slow_writer(path: str, ready) -> None:
    with ResumableJsonlWriter(path) as w:
        for i in range(10_000):
            w.write({"id": i, "payload": "x" * 200})
            if i == 50:
                ready.set()


def test_killed_writer_loses_no_finished_record(tmp_path):
    p = tmp_path / "killed.jsonl"
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_slow_writer, args=(str(p), ready))
    proc.start()
    assert ready.wait(30)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    w = ResumableJsonlWriter(p)  # recovers: every complete line is a finished record
    n = len(w.done)
    assert n > 50
    assert sorted(w.done) == list(range(n))
    w.close()
    assert len(read_jsonl(p)) == n  # the file itself parses after recovery


def test_atomic_write_keeps_umask_and_existing_mode(tmp_path):
    import os

    from leanlm.core.records import write_text

    old = os.umask(0o027)
    try:
        write_text(tmp_path / "new.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640  # 0666 & ~027, not mkstemp's 0600
    (tmp_path / "new.txt").chmod(0o604)
    write_text(tmp_path / "new.txt", "y")
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o604 and (
        tmp_path / "new.txt"
    ).read_text() == "y"


def test_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    import leanlm.core.records as records

    synced = []
    monkeypatch.setattr(
        records, "fsync_dir", lambda folder: synced.append((folder, (tmp_path / "a.json").exists()))
    )
    records.write_json(tmp_path / "a.json", {"a": 1})
    assert synced == [(tmp_path, True)]


def test_temp_files_of_killed_writers_are_removed(tmp_path):
    import subprocess
    import sys

    from leanlm.core.records import write_json

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".out.json.{dead.stdout.strip()}.abc123.tmp"  # a writer SIGKILLed mid-write
    stale.write_text('{"half')
    mine = tmp_path / f".out.json.{os.getpid()}.live.tmp"  # a live writer's file stays
    mine.write_text("")
    write_json(tmp_path / "out.json", [1])
    assert not stale.exists() and mine.exists()


def test_publish_dir_keeps_the_first_publishers_folder_and_removes_the_late_tmp(tmp_path):
    folder = tmp_path / "model"
    first = staging_dir(folder)
    first.mkdir()
    (first / "weights").write_text("first")
    late = tmp_path / ".model.99999.tmp"  # a second process that finished building later
    late.mkdir()
    (late / "weights").write_text("late")
    publish_dir(first, folder)
    publish_dir(late, folder)
    assert (folder / "weights").read_text() == "first"
    assert not first.exists() and not late.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
