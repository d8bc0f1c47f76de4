"""The Slurm and Kubernetes examples: the batch scripts parse and run the commands they mean, the
manifests validate against the Kubernetes schema, and every `sweep` command line in them is one
the CLI accepts (an option renamed in the CLI fails here, not on a cluster)."""

import os
import re
import subprocess
from pathlib import Path

import pytest
import typer

from sweep.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SBATCH = sorted((EXAMPLES / "slurm").glob("*.sbatch"))
MANIFESTS = sorted((EXAMPLES / "kubernetes").glob("*.yaml"))

# sbatch's long options these scripts may use, with the form of their values
SBATCH_OPTIONS = {
    "job-name": r"[\w.-]+", "gres": r"gpu(:\w+)?:\d+", "cpus-per-task": r"\d+", "mem": r"\d+[KMGT]",
    "time": r"(\d+-)?\d{1,2}:\d{2}:\d{2}", "signal": r"(B:)?[A-Z]+@\d+", "output": r"[\w./%-]+",
    "partition": r"[\w,-]+", "array": r"[\d,-]+(%\d+)?",
}


def parse_sweep(args: list[str]):
    """Parse `sweep ARGS` with the real CLI, running nothing: unknown options, bad values and
    missing required options fail here."""
    group = typer.main.get_command(app)
    name, *rest = args
    command = group.commands[name]
    return command.make_context(name, list(rest), resilient_parsing=False)


def test_examples_are_there():
    assert {p.name for p in SBATCH} == {"proxy.sbatch", "sweep.sbatch"}
    assert {p.name for p in MANIFESTS} == {"job.yaml", "postgres.yaml", "proxy.yaml"}


@pytest.mark.parametrize("script", SBATCH, ids=lambda p: p.name)
def test_batch_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    directives = [x for x in lines if x.startswith("#SBATCH")]
    assert directives, "no #SBATCH directive"
    first_command = next(i for i, x in enumerate(lines) if x and not x.startswith("#"))
    assert all(lines.index(d) < first_command for d in directives), "sbatch ignores directives after the first command"
    for d in directives:
        m = re.fullmatch(r"#SBATCH --([\w-]+)=(\S+)(\s+#.*)?", d)
        assert m, f"not an sbatch directive: {d}"
        key, value = m.group(1), m.group(2)
        assert key in SBATCH_OPTIONS, f"unknown sbatch option --{key}"
        assert re.fullmatch(SBATCH_OPTIONS[key], value), f"--{key}={value}"


def _run_script(script: Path, tmp_path: Path, env: dict) -> list[str]:
    """Run the batch script as a node would, with `sweep` standing in as a recorder of its argv."""
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text(f'export PATH="{venv}:$PATH"\n')
    recorder = venv / "sweep"
    recorder.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$SWEEP_ARGV"\n')
    recorder.chmod(0o755)
    argv_file = tmp_path / "argv"
    full = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SWEEP_ARGV": str(argv_file), **env}
    out = subprocess.run(["bash", str(script)], cwd=tmp_path, env=full, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return argv_file.read_text().splitlines()


def test_the_proxy_script_serves_and_says_where(tmp_path):
    argv = _run_script(EXAMPLES / "slurm" / "proxy.sbatch", tmp_path,
                       {"SWEEP_DB": "postgresql://sweep@db.cluster/sweep"})
    ctx = parse_sweep(argv)
    assert argv[0] == "proxy"
    assert ctx.params["storage"] == "postgresql://sweep@db.cluster/sweep"
    assert ctx.params["host"] == "0.0.0.0"
    url = (tmp_path / "logs" / "proxy.url").read_text().strip()
    assert re.fullmatch(rf"grpc://[\w.-]+:{ctx.params['port']}", url), url


def test_the_worker_script_joins_through_the_proxy(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "proxy.url").write_text("grpc://node17:13000\n")
    argv = _run_script(EXAMPLES / "slurm" / "sweep.sbatch", tmp_path, {})
    ctx = parse_sweep(argv)
    assert argv[0] == "worker" and ctx.params["storage"] == "grpc://node17:13000"
    assert ctx.params["data"].endswith("data/fer2013.csv.gz")
    (tmp_path / "direct").mkdir()
    direct = _run_script(EXAMPLES / "slurm" / "sweep.sbatch", tmp_path / "direct", {"SWEEP_STORAGE": "postgresql://u@h/db"})
    assert parse_sweep(direct).params["storage"] == "postgresql://u@h/db"


def test_the_manifests_validate_against_the_kubernetes_schema():
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]' brings kubernetes-validate")
    import yaml

    version = kv.latest_version()
    kinds = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            kv.validate(doc, version, strict=True)  # raises on an unknown field or a wrong type
            kinds.append(doc["kind"])
    assert sorted(kinds) == ["Deployment", "Job", "Service", "Service", "StatefulSet"]
    # and the validator does catch a slip
    bad = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
           "spec": {"template": {"spec": {"containers": [{"name": "w", "image": "i", "comand": ["sweep"]}]}}}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, version, strict=True)


def test_the_manifests_sweep_commands_parse_and_meet():
    import yaml

    commands, services = {}, {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "Service":
                services[doc["metadata"]["name"]] = doc["spec"]["ports"][0]["port"]
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []):
                if c.get("command", [""])[0] == "sweep":
                    # Kubernetes expands $(VAR) from the container's env; any URL-shaped value does here
                    args = [re.sub(r"\$\(\w+\)", "postgresql://sweep@sweep-db/sweep", a)
                            for a in c["command"][1:] + c.get("args", [])]
                    commands[args[0]] = parse_sweep(args).params
    assert set(commands) == {"proxy", "worker"}
    worker_storage = commands["worker"]["storage"]
    assert worker_storage == f"grpc://sweep-proxy:{services['sweep-proxy']}"  # the workers reach the proxy's Service
    assert commands["proxy"]["port"] == services["sweep-proxy"] and commands["proxy"]["host"] == "0.0.0.0"
    assert commands["proxy"]["storage"].endswith("@sweep-db/sweep") and "sweep-db" in services
