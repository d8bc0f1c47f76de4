"""What holds across the versions pyproject.toml admits: option names whatever typer derives them
from."""

import inspect
from pathlib import Path

import typer
from typer.testing import CliRunner

from sweep.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


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
