"""Files and artifacts: ``run.save``, ``log_code``, versions by content, aliases, lineage
(``use_artifact``) and ``download``; the index shared by concurrent writers."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import waddle
from tests.helpers import of_type, read_events, waddle_dir
from tests.small_disk import small_disk
from waddle.blobs.store import BlobStore, BlobWriter


def write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def index(name: str) -> dict:
    return orjson.loads((waddle_dir() / "artifacts" / f"{name}.json").read_bytes())


def check_blob(sha256: str, size: int) -> bytes:
    data = BlobStore(waddle_dir()).path(sha256).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha256 and len(data) == size
    return data


# --- versions ----------------------------------------------------------------------------------

contents = st.dictionaries(
    st.sampled_from(["a.txt", "b.bin", "sub/c.txt", "sub/deep/d"]),
    st.binary(max_size=64),
    min_size=1,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    first=contents,
    second=contents,
    metadata=st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1)),
)
def test_the_same_content_is_the_same_version_and_new_content_the_next(
    tmp_path_factory: pytest.TempPathFactory, first: dict, second: dict, metadata: dict
) -> None:
    folder = tmp_path_factory.mktemp("data")
    name = f"ds-{folder.name}"  # one artifact name per example
    versions = []
    with waddle.init(project="artifacts", root=folder / "root") as run:
        for files in (first, second, first):
            source = write(tmp_path_factory.mktemp("src"), files)
            artifact = waddle.Artifact(name, "dataset", metadata=metadata)
            artifact.add_dir(source)
            versions.append(run.log_artifact(artifact).version)
    expected_second = 0 if second == first else 1
    assert versions == [0, expected_second, 0]
    logged = of_type(read_events(folder / "root"), "artifact_version")
    assert [e["version"] for e in logged] == versions
    assert logged[0]["digest"] == logged[2]["digest"]
    assert (logged[0]["digest"] == logged[1]["digest"]) == (first == second)


def test_a_version_is_its_files_references_and_type_not_its_metadata(tmp_path: Path) -> None:
    data = write(tmp_path / "data", {"x.csv": b"1,2\n", "y/z.csv": b"3\n"})
    with waddle.init(project="artifacts") as run:
        first = waddle.Artifact("table", "dataset", metadata={"rows": 2})
        first.add_dir(data)
        first.add_reference("s3://bucket/raw/", name="raw")
        run.log_artifact(first, aliases=["best"])
        again = waddle.Artifact("table", "dataset", metadata={"rows": "other"})
        again.add_file(data / "x.csv")
        again.add_file(data / "y" / "z.csv", name="y/z.csv")
        again.add_reference("s3://bucket/raw/", name="raw")
        run.log_artifact(again)
        other_type = waddle.Artifact("table", "model")
        other_type.add_dir(data)
        other_type.add_reference("s3://bucket/raw/", name="raw")
        run.log_artifact(other_type, aliases=["prod"])
    assert [first.version, again.version, other_type.version] == [0, 0, 1]
    events = of_type(read_events(), "artifact_version")
    assert events[0] | {"seq": 0, "ts": 0} == {
        "seq": 0,
        "ts": 0,
        "type": "artifact_version",
        "name": "table",
        "artifact_type": "dataset",
        "version": 0,
        "digest": first.digest,
        "manifest": events[0]["manifest"],
        "size": 6,
        "files": 2,
        "aliases": ["best", "latest"],
        "metadata": {"rows": 2},
    }
    manifest = orjson.loads(
        check_blob(
            events[0]["manifest"],
            len(BlobStore(waddle_dir()).path(events[0]["manifest"]).read_bytes()),
        )
    )
    assert manifest == {
        "name": "table",
        "type": "dataset",
        "metadata": {"rows": 2},
        "files": [
            {"path": "x.csv", "sha256": hashlib.sha256(b"1,2\n").hexdigest(), "size": 4},
            {"path": "y/z.csv", "sha256": hashlib.sha256(b"3\n").hexdigest(), "size": 2},
        ],
        "references": [{"path": "raw", "uri": "s3://bucket/raw/"}],
    }
    for entry in manifest["files"]:
        check_blob(entry["sha256"], entry["size"])
    saved = index("table")
    assert [v["version"] for v in saved["versions"]] == [0, 1]
    assert saved["aliases"] == {"latest": 1, "best": 0, "prod": 1}


def test_use_artifact_records_lineage_and_download_writes_the_files(tmp_path: Path) -> None:
    data = write(tmp_path / "data", {"w.bin": b"weights-1"})
    with waddle.init(project="artifacts") as producer:
        model = waddle.Artifact("model", "model")
        model.add_dir(data)
        producer.log_artifact(model, aliases=["best"])
        (data / "w.bin").write_bytes(b"weights-2")
        newer = waddle.Artifact("model", "model")
        newer.add_dir(data)
        producer.log_artifact(newer)
    with waddle.init(project="artifacts") as consumer:
        best = consumer.use_artifact("model:best")
        latest = consumer.use_artifact("me/proj/model")
        pinned = waddle.use_artifact("model:v1")
        with pytest.raises(waddle.UsageError, match="v0, v1, best, latest"):
            consumer.use_artifact("model:v7")
        with pytest.raises(waddle.UsageError, match="none"):
            consumer.use_artifact("never-logged:latest")
    assert (best.version, latest.version, pinned.version) == (0, 1, 1)
    assert best.aliases == ["best"] and latest.aliases == ["latest"]
    uses = of_type(read_events(stream=consumer.stream), "artifact_use")
    assert [(e["name"], e["version"], e["alias"]) for e in uses] == [
        ("model", 0, "best"),
        ("model", 1, "latest"),
        ("model", 1, None),
    ]
    assert uses[0]["digest"] == model.digest
    folder = Path(best.download(tmp_path / "out"))
    assert (folder / "w.bin").read_bytes() == b"weights-1"
    assert best.get_path("w.bin").read_bytes() == b"weights-1"
    assert [f["path"] for f in latest.files()] == ["w.bin"]
    os.chdir(tmp_path)
    assert Path(latest.download()) == Path("artifacts/model:v1")
    assert Path("artifacts/model:v1/w.bin").read_bytes() == b"weights-2"


def test_concurrent_writers_of_one_name_get_distinct_versions(tmp_path: Path) -> None:
    sources = [write(tmp_path / f"s{i}", {"f": str(i).encode()}) for i in range(6)]
    run = waddle.init(project="artifacts")
    found: list[int | None] = []

    def log(source: Path) -> None:
        artifact = waddle.Artifact("shared", "dataset")
        artifact.add_dir(source)
        found.append(run.log_artifact(artifact).version)

    threads = [threading.Thread(target=log, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    run.finish()
    assert sorted(found) == list(range(6))  # type: ignore[arg-type]
    assert [v["version"] for v in index("shared")["versions"]] == list(range(6))


def test_misuse_fails_at_the_call(tmp_path: Path) -> None:
    for bad in ("", "a/b", "a:b", "../up", 3):
        with pytest.raises(waddle.UsageError):
            waddle.Artifact(bad, "model")  # type: ignore[arg-type]
    artifact = waddle.Artifact("ok", "model")
    with pytest.raises(waddle.UsageError, match="no file"):
        artifact.add_file(tmp_path / "missing.pt")
    with pytest.raises(waddle.UsageError, match="no folder"):
        artifact.add_dir(tmp_path / "missing")
    with pytest.raises(waddle.UsageError, match="relative"):
        artifact.add_reference("s3://b/k", name="../k")
    with pytest.raises(waddle.EncodeError, match="metadata"):
        waddle.Artifact("ok", "model", metadata={"n": 2**64})
    with waddle.init(project="artifacts") as run:
        with pytest.raises(waddle.UsageError, match="alias"):
            run.log_artifact(artifact, aliases=["a:b"])
        artifact.metadata["where"] = object()
        with pytest.raises(waddle.EncodeError, match="metadata"):
            run.log_artifact(artifact)


def test_a_file_that_disappears_before_logging_is_counted_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = write(tmp_path / "data", {"a": b"1", "b": b"2"})
    artifact = waddle.Artifact("gone", "dataset")
    artifact.add_dir(data)
    (data / "b").unlink()
    with waddle.init(project="artifacts") as run, caplog.at_level(logging.WARNING, "waddle"):
        assert run.log_artifact(artifact).version is None
        assert run.dropped == 1
    assert not of_type(read_events(), "artifact_version")
    assert of_type(read_events(), "finish")[0]["dropped"] == {"blob ENOENT": 1}
    assert any("artifact gone" in r.getMessage() for r in caplog.records)


def test_a_file_changing_while_saved_is_counted_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "ckpt.pt"
    checkpoint.write_bytes(os.urandom(1 << 20))
    real_write = BlobWriter.write

    def write_and_rotate(self: BlobWriter, chunk: bytes) -> None:
        if self.size == 0:
            checkpoint.unlink()
        real_write(self, chunk)

    with waddle.init(project="artifacts") as run:
        with monkeypatch.context() as patch:
            patch.setattr(BlobWriter, "write", write_and_rotate)
            assert run.save(str(checkpoint), policy="now") == []
        assert run.dropped == 1
    assert not of_type(read_events(), "artifact")
    assert of_type(read_events(), "finish")[0]["dropped"] == {"blob SourceChanged": 1}


# --- run.save and log_code ---------------------------------------------------------------------


def test_save_records_files_now_and_what_changed_at_finish(tmp_path: Path) -> None:
    os.chdir(tmp_path)
    write(tmp_path / "ckpt", {"a.pt": b"a1", "sub/b.pt": b"b1", "notes.txt": b"n"})
    run = waddle.init(project="files")
    assert run.save("ckpt/**/*.pt") == ["a.pt", "sub/b.pt"]
    assert run.save("ckpt/notes.txt", base_path=str(tmp_path), policy="now") == ["ckpt/notes.txt"]
    assert run.save("later/*.bin", policy="end") == []
    with pytest.raises(waddle.UsageError, match="base_path"):
        run.save("ckpt/a.pt", base_path=str(tmp_path / "elsewhere"))
    with pytest.raises(waddle.UsageError, match="policy"):
        run.save("ckpt/a.pt", policy="sometimes")
    (tmp_path / "ckpt" / "a.pt").write_bytes(b"a2")
    write(tmp_path / "later", {"x.bin": b"x"})
    run.finish()
    saved = of_type(read_events(), "artifact")
    assert [(e["name"], e["kind"]) for e in saved] == [
        ("a.pt", "file"),
        ("sub/b.pt", "file"),
        ("ckpt/notes.txt", "file"),
        ("a.pt", "file"),  # changed: recorded again at finish; sub/b.pt unchanged: not
        ("x.bin", "file"),
    ]
    assert [check_blob(e["sha256"], e["size"]) for e in saved] == [b"a1", b"b1", b"n", b"a2", b"x"]
    assert saved[0]["path"] == str(tmp_path / "ckpt" / "a.pt")


def test_log_code_records_source_files_and_skips_environments(tmp_path: Path) -> None:
    write(
        tmp_path / "proj",
        {
            "train.py": b"print(1)",
            "lib/model.py": b"x = 1",
            "README.md": b"hi",
            ".venv/pyvenv.cfg": b"",
            ".venv/lib/site.py": b"",
            "__pycache__/train.cpython-311.py": b"",
            ".git/hook.py": b"",
        },
    )
    with waddle.init(project="files") as run:
        assert run.log_code(str(tmp_path / "proj")) == ["lib/model.py", "train.py"]
        assert run.log_code(
            str(tmp_path / "proj"),
            include_fn=lambda path, root: path.endswith((".py", ".md")),
            exclude_fn=lambda path, root: "lib" in Path(path).relative_to(root).parts,
        ) == ["README.md", "train.py"]
    code = of_type(read_events(), "artifact")
    assert [(e["name"], e["kind"]) for e in code] == [
        ("lib/model.py", "code"),
        ("train.py", "code"),
        ("README.md", "code"),  # train.py is unchanged: recorded once
    ]


def test_a_file_larger_than_the_free_space_is_counted_and_leaves_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    big = tmp_path / "model.ckpt"
    big.write_bytes(os.urandom(4 << 20))  # twice the small disk
    with small_disk(tmp_path / "disk", tmp_path / "log") as disk:
        run = waddle.init(project="files", root=disk.root)
        with caplog.at_level(logging.WARNING, "waddle"):
            assert run.save(str(big)) == []
            artifact = waddle.Artifact("weights", "model")
            artifact.add_file(big)
            assert run.log_artifact(artifact).version is None
        (tmp_path / "small.txt").write_bytes(b"fits")
        assert run.save(str(tmp_path / "small.txt")) == ["small.txt"]
        run.finish()
        events = read_events(disk.root)
        # the live save is tried again at finish, and still does not fit
        assert of_type(events, "finish")[0]["dropped"] == {"blob ENOSPC": 3}
        assert [e["name"] for e in of_type(events, "artifact")] == ["small.txt"]
        assert not of_type(events, "artifact_version")
        assert not list((disk.root / "blobs" / "tmp").iterdir())
        assert any(
            "ENOSPC" in r.getMessage() or "No space" in r.getMessage() for r in caplog.records
        )
