"""One unique secret, fed through every command and output format, never appears on stdout or stderr.

The secret rides in every place an operator can put a credential (the repository URL's password or user name, a
query token, an HTTP header given as a flag or in FALCOCTL_DRIVER_HTTP_HEADERS, a repository in falcoctl.yaml),
and a server on 127.0.0.1 echoes everything it received (request line, headers, decoded Basic credentials) in its
reason phrase and body. Every command runs as a real `python -m driver_loader` process.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECRET = "Zq7vSeCrEt9xWp"
OS_RELEASE = 'ID=ubuntu\nVERSION_ID="24.04"\n'
TARGET = ["--kernel-release", "6.8.0-79-generic", "--kernel-version", "#79-Ubuntu SMP", "--arch", "x86_64",
          "--driver-version", "8.0.0+driver"]


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers 500 with a reason phrase and a body repeating the whole request, credentials decoded."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):
        said = [self.requestline] + [f"{k}: {v}" for k, v in self.headers.items()]
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            said.append("basic " + base64.b64decode(auth[6:]).decode("utf-8", "replace"))
        echo = " ".join(said).replace("\r", " ").replace("\n", " ")
        body = f"Bad credentials {echo}\n".encode()
        self.send_response(500, f"Bad credentials Bearer {echo}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def world(tmp_path):
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text(OS_RELEASE)
    artifact = tmp_path / "not-a-driver.ko"
    artifact.write_bytes(b"this is not an ELF file\n")
    return tmp_path


def run(world, args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FALCOCTL_", "DRIVER", "HOST_ROOT"))}
    env.update({"HOME": str(world / "home"), "PYTHONPATH": str(REPO), "NO_COLOR": "1"})
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "driver_loader", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=str(world))


def common(world):
    return ["--host-root", str(world / "host"), "--cache-dir", str(world / "cache"), *TARGET]


def assert_no_secret(result, label):
    for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        assert SECRET not in text, f"{label}: the secret is on {stream}:\n{text}"
        assert SECRET.lower() not in text.lower(), f"{label}: the secret is on {stream} (another case):\n{text}"


CARRIERS = ["URL password", "URL user name", "query token", "header flag", "other credential header",
            "header variable", "repository variable", "config file"]


def carriers(server):
    """(name, repository argv, header argv, extra env, falcoctl.yaml driver section) for each way of handing over
    the secret. Header options go only to commands that fetch."""
    plain = ["--repo", f"http://{server}/driver"]
    return [
        ("URL password", ["--repo", f"http://user:{SECRET}@{server}/driver"], [], {}, None),
        ("URL user name", ["--repo", f"http://{SECRET}@{server}/driver"], [], {}, None),
        ("query token", ["--repo", f"http://{server}/driver?token={SECRET}"], [], {}, None),
        ("header flag", plain, ["--http-header", f"Authorization: Bearer {SECRET}"], {}, None),
        ("other credential header", plain, ["--http-header", f"X-Api-Key: {SECRET}"], {}, None),
        ("header variable", plain, [], {"FALCOCTL_DRIVER_HTTP_HEADERS": f"X-Trace: 1,Authorization: Bearer {SECRET}"},
         None),
        ("repository variable", [], [], {"FALCOCTL_DRIVER_REPOS": f"http://u:{SECRET}@{server}/driver"}, None),
        ("config file", [], [], {}, {"repos": [f"http://u:{SECRET}@{server}/driver"]}),
    ]


FETCHING = ("install", "download", "doctor")


def config_args(world, section):
    if section is None:
        return []
    path = world / "falcoctl.yaml"
    path.write_text(json.dumps({"driver": section}))  # JSON is YAML
    return ["--config", str(path)]


def commands(world):
    """(label, argv) of every command and output format; fetch options only where the command has them."""
    base = common(world)
    fetching = ["--http-retries", "1", "--http-timeout", "5", "--no-version-fallback"]
    install = ["install", "--type", "ebpf", "--no-compile", "--falco-config-dir", str(world / "falco"), *base,
               *fetching]
    return [
        ("printenv text", ["printenv", "--type", "ebpf", *base]),
        ("printenv json", ["printenv", "--type", "ebpf", *base, "--output", "json"]),
        ("install --dry-run text", [*install, "--dry-run"]),
        ("install --dry-run json", [*install, "--dry-run", "--output", "json", "--log-format", "json"]),
        ("install text logs", install),
        ("install json logs, debug", [*install, "--log-format", "json", "--log-level", "debug"]),
        ("install text, debug", [*install, "--log-level", "debug"]),
        ("download json", ["download", "--type", "ebpf", *base, *fetching, "--output", "json"]),
        ("download debug json logs", ["download", "--type", "ebpf", *base, *fetching, "--log-level", "debug",
                                      "--log-format", "json"]),
        ("doctor text", ["doctor", "--type", "ebpf", *base, "--falco-config-dir", str(world / "falco")]),
        ("doctor json", ["doctor", "--type", "ebpf", *base, "--output", "json", "--log-format", "json",
                         "--log-level", "debug"]),
        ("status text", ["status", *base, "--falco-config-dir", str(world / "falco")]),
        ("status json debug", ["status", *base, "--output", "json", "--log-level", "debug"]),
        ("build json logs", ["build", "--type", "ebpf", *base, "--log-format", "json", "--log-level", "debug"]),
        ("cleanup", ["cleanup", *base, "--falco-config-dir", str(world / "falco"), "--log-level", "debug"]),
    ]


def inspect_commands(world):
    # inspect takes no --repo: the secret reaches it through the environment and the config file only
    path = str(world / "not-a-driver.ko")
    return [
        ("inspect text", ["inspect", path, "--host-root", str(world / "host"), "--log-level", "debug"]),
        ("inspect json", ["inspect", path, "--output", "json", "--log-format", "json", "--log-level", "debug"]),
    ]


def test_the_echo_server_really_echoes_the_secret(echo_server):
    import urllib.request

    request = urllib.request.Request(f"http://{echo_server}/x?token={SECRET}")
    with pytest.raises(Exception) as info:
        urllib.request.urlopen(request, timeout=10)
    assert SECRET in str(info.value) and SECRET in info.value.read().decode()


def test_every_command_and_format_keeps_a_secret_from_the_url_and_a_header(world, echo_server):
    repo = ["--repo", f"http://user:{SECRET}@{echo_server}/driver?sig={SECRET}"]
    header = ["--http-header", f"Authorization: Bearer {SECRET}"]
    cases = [(label, [*argv, *repo, *(header if argv[0] in FETCHING else [])]) for label, argv in commands(world)]
    env = {"FALCOCTL_DRIVER_HTTP_HEADERS": f"Cookie: session={SECRET}"}
    cases += inspect_commands(world)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: (case[0], run(world, case[1], env)), cases))
    for label, result in results:
        assert_no_secret(result, label)
    by_label = dict(results)
    # the runs did what they were meant to: met the server, or printed the plan
    assert by_label["install text logs"].returncode == 1
    assert "HTTP 500 Internal Server Error" in by_label["install text logs"].stderr
    assert "Bad credentials" not in by_label["install text logs"].stderr  # the server's words are not repeated
    assert "****@" in by_label["printenv text"].stdout
    assert "Traceback" in by_label["install text, debug"].stderr
    for label in ("install json logs, debug", "download debug json logs", "build json logs", "inspect json"):
        lines = by_label[label].stderr.splitlines()
        assert lines and all(isinstance(json.loads(line), dict) for line in lines), label
    assert any("traceback" in json.loads(line) for line in by_label["install json logs, debug"].stderr.splitlines())


@pytest.mark.parametrize("carrier", CARRIERS)
def test_each_way_of_handing_over_a_secret_is_redacted(world, echo_server, carrier):
    name, repo, header, env, section = carriers(echo_server)[CARRIERS.index(carrier)]
    extra = [*repo, *config_args(world, section)]
    wanted = {"printenv json", "install json logs, debug", "doctor text"}
    cases = [(label, [*args, *extra, *(header if args[0] in FETCHING else [])]) for label, args in commands(world)
             if label in wanted]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: (case[0], run(world, case[1], env)), cases))
    for label, result in results:
        assert_no_secret(result, f"{name}, {label}")
    install = dict(results)["install json logs, debug"]
    assert install.returncode == 1, install.stderr
    assert "HTTP 500" in install.stderr


def test_a_usage_error_quoting_the_secret_does_not_print_it(world):
    for args in (["printenv", *common(world), "--repo", f"ftp://user:{SECRET}@mirror.example/d"],
                 ["printenv", *common(world), "--http-header", f"Authorization Bearer {SECRET}"],
                 ["printenv", *common(world), "--repo", f"https://mirror.example/d#{SECRET}",
                  "--http-header", f"X-Auth-Token: {SECRET}"]):
        result = run(world, args)
        assert result.returncode == 2, result.stderr
        assert_no_secret(result, " ".join(args[:1]))


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_an_internal_error_and_its_traceback_do_not_print_the_secret(world, log_format):
    url = f"https://user:{SECRET}@mirror.example/d?token={SECRET}"
    code = (
        "import sys\n"
        "from driver_loader.cli.commands import printenv\n"
        "def boom(*args, **kwargs):\n"
        f"    raise RuntimeError('cannot plan for ' + {url!r})\n"
        "printenv.resolve_plan = boom\n"
        "from driver_loader.cli.main import main\n"
        f"main(['printenv', '--repo', {url!r}, '--log-level', 'debug', '--log-format', {log_format!r}])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FALCOCTL_", "DRIVER", "HOST_ROOT"))}
    env.update({"HOME": str(world / "home"), "PYTHONPATH": str(REPO)})
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1, result.stderr
    assert "internal error: RuntimeError: cannot plan for https://****@mirror.example/d?token=****" in result.stderr
    assert "Traceback" in result.stderr
    assert_no_secret(result, f"internal error, {log_format}")
    if log_format == "json":
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "traceback" in json.loads(lines[0])
