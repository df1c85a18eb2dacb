"""Shared fixtures. Tests never touch the network or the user's cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# The real INQUIRE query files, shipped beside the repository for tests.
SHARED_DATA = REPO.parent / "shared" / "inquire-data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own empty cache folders (inquire's and the Hugging Face hub's, where
    INQUIRE-Rerank goes), no mirror override, and no compiled rescoring kernel unless asked."""
    from huggingface_hub import constants as hf_constants

    monkeypatch.setenv("INQUIRE_HOME", str(tmp_path_factory.mktemp("inquire_home")))
    monkeypatch.delenv("INQUIRE_BASE_URL", raising=False)
    # The rescoring's compiled kernel only where a test asks for it (tests/test_index_fused.py,
    # the `rescore_path` fixture): once loaded in the process it would change how later
    # tests rescore (one stage instead of two), whichever test happened to load it.
    monkeypatch.setenv("INQUIRE_NUMBA", "off")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf_hub")))


@pytest.fixture
def real_queries_dir() -> Path:
    if not (SHARED_DATA / "inquire_queries_test.csv").is_file():
        pytest.skip(f"real INQUIRE query files not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def inquire_mirror(
    real_queries_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, bytes]]:
    """The real query CSVs and a generated annotations CSV, served in the upstream layout
    (``INQUIRE_BASE_URL`` points at it); yields ``(server, annotations bytes)``."""
    import pandas as pd

    from inquire.data import read_queries
    from inquire.testing.data_mirror import annotations_csv, write_mirror
    from inquire.testing.http_server import FixtureServer

    val = (real_queries_dir / "inquire_queries_val.csv").read_bytes()
    test = (real_queries_dir / "inquire_queries_test.csv").read_bytes()
    both = pd.concat(
        [read_queries(real_queries_dir / f"inquire_queries_{s}.csv") for s in ("val", "test")]
    )
    ann = annotations_csv(both, seed=3)
    root = write_mirror(
        tmp_path / "mirror", {"queries-val": val, "queries-test": test, "annotations": ann}
    )
    with FixtureServer(root) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url)
        yield server, ann


# -- Ray in a private network namespace --------------------------------------------------------
# A plain ray.init here also listens on the machine's external address. Tests marked
# ``private_network`` run in a fresh pytest process inside new network, PID and mount
# namespaces (``unshare --net --pid --fork --mount-proc``) where only the loopback exists
# (brought up first), so every Ray listener binds 127.0.0.1 and ``ray stop`` can only see the
# processes started there; Ray's token authentication is off inside (RAY_AUTH_MODE=disabled),
# which is safe where nothing but loopback exists. Where unshare is not permitted, they skip.
INSIDE_NAMESPACE = "INQUIRE_PRIVATE_NETWORK"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "private_network: runs in a private network namespace (Ray tests)"
    )


_NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]


def _namespace_command() -> tuple[list[str] | None, str]:
    """The unshare prefix that works here (as root, or as a user mapped to root in a new
    user namespace), or None and why not."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None, "needs unshare and ip (util-linux, iproute2) to run Ray in a private network"
    why = ""
    for prefix in (_NAMESPACE, [*_NAMESPACE, "--user", "--map-root-user"]):
        probe = subprocess.run(
            [*prefix, "ip", "link", "set", "lo", "up"], capture_output=True, text=True
        )
        if probe.returncode == 0:
            return prefix, ""
        why = probe.stderr.strip() or str(probe.returncode)
    return None, (
        "Ray tests run only in a private network namespace, and unshare is not permitted "
        f"here ({why}); run them as root or allow unprivileged user namespaces"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A ``private_network`` test outside the namespace: re-run it inside one, report its
    outcome here."""
    if pyfuncitem.get_closest_marker("private_network") is None:
        return None
    if os.environ.get(INSIDE_NAMESPACE) == "1":
        return None  # inside: run the test body as usual
    import shlex
    import subprocess
    import sys

    prefix, problem = _namespace_command()
    if prefix is None:
        pytest.skip(problem)
    env = {**os.environ, INSIDE_NAMESPACE: "1", "RAY_AUTH_MODE": "disabled"}
    # The inner report without captured output: Ray's debug logging would push the
    # assertion out of the part of the report shown here.
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"]
    pytest_cmd.append("--show-capture=no")
    pytest_cmd.append(pyfuncitem.nodeid)
    script = "ip link set lo up && exec " + shlex.join(pytest_cmd)
    proc = subprocess.run(
        [*prefix, "bash", "-c", script],
        cwd=str(pyfuncitem.config.rootpath),
        env=env,
        capture_output=True,
        text=True,
    )
    out = proc.stdout[:8000] + "\n" + proc.stderr[-2000:]
    if proc.returncode == 0 and " passed" in proc.stdout:
        return True
    if proc.returncode == 0 and " skipped" in proc.stdout:
        pytest.skip(f"skipped inside the private network namespace:\n{out}")
    pytest.fail(f"failed inside the private network namespace (exit {proc.returncode}):\n{out}")
    return None


@pytest.fixture
def ray_two_nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A real two-node Ray cluster on this machine (head + one worker node, 1 CPU each, all
    on 127.0.0.1), ``ray.init`` connected to it; yields the ``ray`` module. Only inside the
    private network namespace (mark the test ``private_network``)."""
    import socket
    import subprocess
    import sys
    import time

    if request.node.get_closest_marker("private_network") is None:
        pytest.fail("ray_two_nodes needs the test marked @pytest.mark.private_network")
    if os.environ.get(INSIDE_NAMESPACE) != "1":
        yield None  # outside: the test itself re-runs inside a namespace (pytest_pyfunc_call)
        return
    ray = pytest.importorskip("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import shutil
    import tempfile

    ray_bin = str(Path(sys.executable).with_name("ray"))
    # Ray's socket paths must fit 107 bytes: a short folder, not pytest's tmp_path.
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]

    def start(*args: str) -> None:
        proc = subprocess.run(
            [ray_bin, "start", *args, *common], capture_output=True, text=True, timeout=300
        )
        if proc.returncode:
            pytest.fail(f"ray start {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")

    try:
        start("--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp)
        start("--address", f"127.0.0.1:{port}")
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
        deadline = time.monotonic() + 300
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.monotonic() > deadline:
                pytest.fail(f"the second Ray node did not join: {ray.nodes()}")
            time.sleep(0.5)
        yield ray
    finally:
        ray.shutdown()
        # Only this namespace's processes are visible here (own PID namespace).
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=300)
        shutil.rmtree(temp, ignore_errors=True)
