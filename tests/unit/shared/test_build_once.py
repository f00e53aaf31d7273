"""The machine-wide artifact cache: one builder among concurrent processes, never a half-written artifact."""

import multiprocessing
import time
from pathlib import Path

import pytest

from shared.model_zoo.build_once import build_once


def _slow_build(log: Path):
    def build(directory: Path) -> None:
        with log.open("a") as f:
            f.write("built\n")
        directory.mkdir()
        (directory / "part.bin").write_bytes(b"x" * 1000)
        time.sleep(0.5)  # the other process arrives while this one builds
        (directory / "done.json").write_text("{}")

    return build


def _build_in_process(target: Path, log: Path, results) -> None:  # type: ignore[no-untyped-def]
    built = build_once(target, _slow_build(log), complete="done.json")
    results.put(sorted(p.name for p in built.iterdir()))


def test_concurrent_processes_build_once_and_all_see_the_whole_artifact(tmp_path):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    target, log = tmp_path / "artifact", tmp_path / "builds.log"
    workers = [context.Process(target=_build_in_process, args=(target, log, results)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert [results.get(timeout=5) for _ in workers] == [["done.json", "part.bin"]] * 3
    assert log.read_text() == "built\n"  # one build; the others waited and read it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact", "artifact.lock", "builds.log"]


def test_a_failed_build_leaves_nothing_and_the_next_call_builds(tmp_path):
    target = tmp_path / "artifact"

    def broken(directory: Path) -> None:
        directory.mkdir()
        (directory / "part.bin").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_once(target, broken, complete="done.json")
    assert not target.exists() and not list(tmp_path.glob("*.partial-*"))

    def incomplete(directory: Path) -> None:  # returns without the file that marks it complete
        directory.mkdir()

    with pytest.raises(RuntimeError, match=r"wrote no done\.json"):
        build_once(target, incomplete, complete="done.json")
    assert not target.exists() and not list(tmp_path.glob("*.partial-*"))
    assert build_once(target, _slow_build(tmp_path / "log"), complete="done.json") == target
    assert (target / "done.json").is_file()


def test_an_incomplete_directory_from_an_older_writer_is_rebuilt_and_a_complete_one_is_kept(tmp_path):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "part.bin").write_bytes(b"stale")  # no done.json: a writer that died half-way
    log = tmp_path / "builds.log"
    build_once(target, _slow_build(log), complete="done.json")
    assert (target / "part.bin").read_bytes() == b"x" * 1000
    build_once(target, _slow_build(log), complete="done.json")
    assert log.read_text() == "built\n"
