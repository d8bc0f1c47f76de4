"""What holds across the versions pyproject.toml admits: option names whatever typer derives them
from, the default PostgreSQL driver, the floors file CI installs, the torch floor, and which commit a
result records."""

import inspect
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sweep import provenance
from sweep.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_option_is_spelled_as_the_readme_spells_it():
    """Typer 0.27 named an option after its metavar where the two differ only in case (`--DEVICE`,
    `--NAME`, `--PORT`): every flag of every command is lower case, in the typer installed."""
    group = typer.main.get_command(app)
    flags = {}
    for name, command in group.commands.items():
        flags[name] = {opt for p in command.params for opt in p.opts if opt.startswith("-")}
        assert all(opt == opt.lower() for opt in flags[name]), (name, flags[name])
    for name in ("run", "worker", "bench", "confirm"):
        assert "--device" in flags[name], name
    assert "--name" in flags["run"] and "--port" in flags["proxy"] and "--port" in flags["dashboard"]


def test_no_option_leaves_its_flag_to_a_metavar_of_the_same_name():
    """The same, in any typer: an option whose metavar is its own name in capitals names its flag
    itself, so that no typer can take the metavar's spelling."""
    for info in app.registered_commands:
        for param in inspect.signature(info.callback, eval_str=True).parameters.values():
            option = next((m for m in getattr(param.annotation, "__metadata__", ())
                           if isinstance(m, typer.models.OptionInfo)), None)
            if option is None or not option.metavar:
                continue
            # in Annotated, typer takes the first positional argument (held as the default) for a flag
            flags = [*option.param_decls, *[option.default] * str(option.default).startswith("-")]
            if not flags:
                assert option.metavar.replace("-", "_").lower() != param.name, (info.callback.__name__, param.name)


def test_run_takes_device_and_name_as_documented(tmp_path, tiny_study):
    db = tmp_path / "s.db"
    r = runner.invoke(app, ["run", "--trials", "1", "--study", str(tiny_study), "--name", "named", "--device", "cpu",
                            "--timeout", "0", "--storage", str(db)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["studies", "--storage", str(db)])
    assert r.exit_code == 0 and "named" in r.output, r.output


def test_a_plain_postgresql_url_means_psycopg_3_in_any_sqlalchemy():
    """SQLAlchemy 2.0 would look for psycopg2 behind postgresql://; the postgres extra brings psycopg 3."""
    import sqlalchemy

    import sweep.storage  # noqa: F401  (sets the default driver where SQLAlchemy's is psycopg2)

    engine = sqlalchemy.create_engine("postgresql://postgres@127.0.0.1:5432/test")
    assert engine.dialect.driver == "psycopg"


# ---------------------------------------------------------------- the floors CI installs

def floors_file(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / ".ci/floors.py"), *args], capture_output=True, text=True)


def test_the_floors_file_pins_every_requirement_at_its_floor():
    r = floors_file("--except", "torch==2.13.0")
    assert r.returncode == 0, r.stderr
    pins = dict(line.split("==") for line in r.stdout.splitlines() if not line.startswith("#"))
    project = pyproject()["project"]
    requirements = project["dependencies"] + [x for extra in project["optional-dependencies"].values() for x in extra]
    for requirement in requirements:
        name, low = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([^,;\s]+)", requirement).groups()
        assert pins[name.lower()] == ("2.13.0" if name == "torch" else low), requirement
    assert set(pins) == {re.match(r"[A-Za-z0-9_.-]+", x).group().lower() for x in requirements}


def test_a_requirement_without_a_floor_is_refused(tmp_path):
    p = tmp_path / "pyproject.toml"
    p.write_text('[project]\nname = "x"\ndependencies = ["numpy>=1.26", "pandas"]\n')
    r = floors_file("--pyproject", str(p))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "floors: error: 'pandas' has no single '>=' floor to test"
    r = floors_file("--pyproject", str(p.with_name("missing.toml")))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- torch

def test_the_torch_floor_is_the_one_pyproject_declares():
    torch_req = next(x for x in pyproject()["project"]["dependencies"] if x.startswith("torch"))
    assert torch_req == "torch>=" + ".".join(map(str, provenance.TORCH_FLOOR))


@pytest.mark.parametrize("found,too_old", [("2.9.1+cu128", True), ("2.10.0", True), ("2.11.0+cu130", False),
                                           ("2.13.0+cpu", False), ("3.0.0", False)])
def test_a_torch_below_the_floor_is_one_line_before_anything_is_written(tmp_path, tiny_study, monkeypatch,
                                                                        found, too_old):
    real = provenance.metadata.version
    monkeypatch.setattr(provenance.metadata, "version", lambda d: found if d == "torch" else real(d))
    assert (provenance.torch_too_old() is not None) == too_old
    if not too_old:
        return
    db = tmp_path / "s.db"
    for args in (["run", "--trials", "1", "--study", str(tiny_study), "--device", "cpu", "--storage", str(db)],
                 ["bench", "--steps", "2"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        assert r.output.strip() == (f"sweep: error: torch {found} is older than 2.11, the oldest torch sweep is "
                                    "tested with: install torch>=2.11")
    assert not db.exists()


# ---------------------------------------------------------------- provenance

def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def recorded_commit(pythonpath: Path) -> str:
    code = ("import sweep.provenance as p, pathlib, sys; "
            f"assert pathlib.Path(p.__file__).is_relative_to({str(pythonpath)!r}), p.__file__; print(p.git_commit())")
    r = subprocess.run([sys.executable, "-c", code], cwd=pythonpath, env={"PYTHONPATH": str(pythonpath), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="no git")
@pytest.mark.parametrize("with_pyproject", [False, True])
def test_a_copy_inside_another_repository_records_its_version_not_that_commit(tmp_path, with_pyproject):
    """A vendored copy (the package alone, or the whole project in a subfolder of another repository)
    records 'not a checkout' and the distribution's version, never the enclosing repository's commit."""
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    (other / "README").write_text("another project\n")
    git(other, "add", "README")
    git(other, "commit", "-q", "-m", "theirs")
    theirs = git(other, "rev-parse", "HEAD")
    copy = other / "vendor" / "fer-sweep"
    shutil.copytree(ROOT / "sweep", copy / "sweep", ignore=shutil.ignore_patterns("__pycache__"))
    if with_pyproject:
        shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    git(other, "add", "vendor")
    git(other, "commit", "-q", "-m", "vendor fer-sweep")
    (copy / "sweep" / "errors.py").write_text("# changed\n", encoding="utf-8")  # a dirty tree, as the issue saw
    recorded = recorded_commit(copy)
    assert recorded == f"not a checkout (fer-sweep {provenance.sweep_version()})"
    assert theirs[:7] not in recorded and "dirty" not in recorded


@pytest.mark.skipif(shutil.which("git") is None, reason="no git")
def test_the_projects_own_checkout_records_its_commit(tmp_path):
    """A checkout of this project (here: a fresh repository holding a copy of it) records its HEAD."""
    repo = tmp_path / "fer-sweep"
    repo.mkdir()
    shutil.copytree(ROOT / "sweep", repo / "sweep", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "ours")
    head = git(repo, "rev-parse", "HEAD")
    assert recorded_commit(repo) == head
    (repo / "sweep" / "errors.py").write_text("# changed\n", encoding="utf-8")
    assert recorded_commit(repo) == head + "+dirty"


def test_every_package_of_the_checkout_goes_into_the_wheel():
    """`pip install .` ships the packages pyproject.toml lists: a new subpackage left out of it works in
    the checkout and fails with ModuleNotFoundError once installed."""
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("sweep", "model", "data", "studies")
             for p in (ROOT / top).rglob("__init__.py") if "__pycache__" not in p.parts}
    assert found <= listed, sorted(found - listed)
