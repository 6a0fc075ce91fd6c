"""The run context: process facts, git (in real temporary repositories), the code snapshot."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.helpers import (
    SCRIPTS,
    child_env,
    raw_log,
    read_events,
    run_script,
)
from waddle.producer import context

GIT_IDENTITY = ("-c", "user.name=Waddle Test", "-c", "user.email=test@example.com")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *GIT_IDENTITY, "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return done.stdout.strip()


def make_repo(path: Path, remote: str | None = None) -> Path:
    """A git repository holding a committed train.py and model.py."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    shutil.copy(SCRIPTS / "lifecycle.py", path / "train.py")
    (path / "model.py").write_text("LAYERS = 3\n")
    git(path, "add", "train.py", "model.py")
    git(path, "commit", "-q", "-m", "first")
    if remote:
        git(path, "remote", "add", "origin", remote)
    return path


@pytest.fixture
def no_git_above(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git must not find a repository above the test's folder (or be steered by GIT_*)."""
    for name in [n for n in os.environ if n.startswith("GIT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))


def as_main_script(monkeypatch: pytest.MonkeyPatch, script: Path | None) -> None:
    main = sys.modules["__main__"]
    if script is None:
        monkeypatch.delattr(main, "__file__", raising=False)
    else:
        monkeypatch.setattr(main, "__file__", str(script), raising=False)


def test_process_facts() -> None:
    facts = context.collect()
    assert facts["argv"] == sys.argv
    assert facts["executable"] == sys.executable
    assert facts["pid"] == os.getpid()
    assert facts["cwd"] == os.getcwd()
    assert facts["python"] == ".".join(map(str, sys.version_info[:3]))
    assert facts["cpu"]["logical"] == psutil.cpu_count(logical=True)
    assert facts["memory_total"] == psutil.virtual_memory().total
    assert "gpus" not in facts


def test_gpus_are_included_when_given() -> None:
    gpus = [{"index": 0, "name": "Fake GPU", "uuid": "GPU-0", "memory_total": 1, "driver": "1"}]
    assert context.collect(gpus)["gpus"] == gpus


@pytest.mark.usefixtures("no_git_above")
def test_outside_a_repository_there_is_no_git_and_no_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    as_main_script(monkeypatch, None)
    facts = context.collect()
    assert "git" not in facts
    assert "code" not in facts


@pytest.mark.usefixtures("no_git_above")
def test_a_script_outside_a_repository_has_a_snapshot_but_no_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "alone.py"
    script.write_text("print('hi')\n")
    as_main_script(monkeypatch, script)
    facts = context.collect()
    assert "git" not in facts
    assert facts["code"] == {
        "path": str(script.resolve()),
        "sha256": hashlib.sha256(b"print('hi')\n").hexdigest(),
        "source": "print('hi')\n",
        "truncated": False,
    }


@pytest.mark.usefixtures("no_git_above")
def test_a_dirty_repository_run_as_a_script(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", remote="https://alice:s3cr3t@example.com/org/repo.git")
    with (repo / "model.py").open("a") as handle:
        handle.write("DROPOUT = 0.5\n")
    done = run_script(repo / "train.py", "finish", cwd=repo, env=child_env())
    assert done.returncode == 0, done.stderr
    facts = read_events()[0]["context"]
    assert facts["git"]["commit"] == git(repo, "rev-parse", "HEAD")
    assert facts["git"]["branch"] == "main"
    assert facts["git"]["dirty"] is True
    assert "+DROPOUT = 0.5" in facts["git"]["diff"]
    assert facts["git"]["diff_truncated"] is False
    assert facts["git"]["remote"] == "https://example.com/org/repo.git"
    assert b"s3cr3t" not in raw_log()
    source = (repo / "train.py").read_bytes()
    assert facts["code"] == {
        "path": str((repo / "train.py").resolve()),
        "sha256": hashlib.sha256(source).hexdigest(),
        "source": source.decode(),
        "truncated": False,
    }
    assert facts["argv"] == [str(repo / "train.py"), "finish"]
    assert facts["cwd"] == str(repo)


@pytest.mark.usefixtures("no_git_above")
def test_a_clean_repository_has_no_diff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "repo")
    as_main_script(monkeypatch, repo / "train.py")
    git_facts = context.collect()["git"]
    assert git_facts == {"commit": git(repo, "rev-parse", "HEAD"), "branch": "main", "dirty": False}


@pytest.mark.usefixtures("no_git_above")
@pytest.mark.parametrize(
    ("remote", "stored"),
    [
        ("https://alice:s3cr3t@example.com/org/repo.git", "https://example.com/org/repo.git"),
        ("https://ghp_token@github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("http://bob:pw@git.local:8080/repo.git", "http://git.local:8080/repo.git"),
        ("https://example.com/org/repo.git", "https://example.com/org/repo.git"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
    ],
)
def test_the_remote_is_stored_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: str, stored: str
) -> None:
    repo = make_repo(tmp_path / "repo", remote=remote)
    as_main_script(monkeypatch, repo / "train.py")
    assert context.collect()["git"]["remote"] == stored
