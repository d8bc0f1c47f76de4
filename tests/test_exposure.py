"""Serving to the network: `sweep dashboard` and `sweep proxy` bound to anything but localhost say,
in one line as they start and in --help, that the storage is open to whoever reaches the port."""

from typer.testing import CliRunner

from sweep.cli import app
from sweep.dashboard import exposed
from tests.conftest import free_port
from tests.test_dashboard import get_json, stop
from tests.test_faults import cli, wait_for
from tests.test_proxy import stop as stop_proxy


def test_only_loopback_addresses_keep_the_storage_to_this_machine():
    assert not any(exposed(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert all(exposed(h) for h in ("0.0.0.0", "::", "10.0.0.5", "myhost.example.org"))


def test_a_dashboard_on_the_network_says_so_in_one_line(made_study):
    url, _ = made_study
    port = free_port()
    proc = cli("dashboard", "--storage", url, "--host", "0.0.0.0", "--port", port)
    try:  # 0.0.0.0 takes 127.0.0.1 too: the test reaches it there
        assert wait_for(lambda: get_json(f"http://127.0.0.1:{port}/api/studies", timeout=2)[0] == 200, timeout=60)
    finally:
        _, err = stop(proc)
    said = [line for line in err.splitlines() if "no password" in line]
    assert said == [f"sweep dashboard: --host 0.0.0.0 serves every study in this storage, and the kept weights to "
                    f"download, to anyone who can reach port {port} of this machine: no password, no encryption"], err


def test_a_proxy_on_the_network_says_so_in_one_line(tmp_path):
    port = free_port()
    proxy = cli("proxy", "--storage", f"sqlite:///{tmp_path / 'p.db'}", "--host", "0.0.0.0", "--port", port)
    try:
        first, second = proxy.stderr.readline(), proxy.stderr.readline()
    finally:
        stop_proxy(proxy)
    assert first.startswith(f"sweep proxy: --host 0.0.0.0 lets anyone who can reach port {port} of this machine read "
                            "and write every study") and "no password" in first, first + second
    assert f"grpc://0.0.0.0:{port}" in second


def test_help_says_what_binding_to_the_network_does():
    for command in ("dashboard", "proxy"):
        text = " ".join(CliRunner().invoke(app, [command, "--help"]).output.split())
        assert "no password, no encryption (the command says so as it starts)" in text, command
