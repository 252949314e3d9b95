"""What an install without extras gets, what each extra adds, and the one version.

The import tests run a fresh interpreter from the checkout (``python -c`` puts the current
directory first on ``sys.path``, so it is this tree's package that is imported), because
this process has long since imported httpx, anyio, redis and uvicorn.
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import state_middleware
from state_middleware import ResponsesStateMiddleware, _defaults
from state_middleware._extras import (
    MISSING_METRICS_MESSAGE,
    MISSING_PROXY_MESSAGE,
    MISSING_TESTING_MESSAGE,
)
from state_middleware._stores.redis_client import MISSING_EXTRA_MESSAGE as MISSING_REDIS_MESSAGE
from state_middleware.cli import MISSING_EXTRA_MESSAGE as MISSING_SERVE_MESSAGE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CORE_DEPENDENCIES = {"asgiref", "msgspec", "cachetools"}
#: asgiref needs typing_extensions below Python 3.11
ALLOWED_IMPORTS = {"state_middleware", *CORE_DEPENDENCIES, "typing_extensions"}
EXTRAS_MODULES = ("httpx", "httpcore", "anyio", "redis", "valkey", "uvicorn", "prometheus_client")

#: imports the package and its scripted apps; prints every top-level module that brought
#: in beyond the standard library and what was loaded before
WALK_MODULES = """
import json, sys
before = set(sys.modules)
import state_middleware
import state_middleware.testing
from state_middleware import MemoryStore, ResponsesStateMiddleware
from state_middleware.testing import ScriptedChatApp, ScriptedResponsesApp
ResponsesStateMiddleware(ScriptedResponsesApp(), MemoryStore())
added = {name.partition(".")[0] for name in set(sys.modules) - before}
print(json.dumps({
    "file": state_middleware.__file__,
    "added": sorted(added - set(sys.stdlib_module_names)),
}))
"""

#: makes the extras' modules impossible to import, then uses the core (two chained turns
#: through the middleware, raw ASGI) and each part that needs an extra; prints the results
WITHOUT_EXTRAS = """
import asyncio, contextlib, importlib, io, json, sys
from importlib.abc import MetaPathFinder

BLOCKED = set(sys.argv[1:])

class Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

assert not BLOCKED & {name.partition(".")[0] for name in sys.modules}
sys.meta_path.insert(0, Absent())

import state_middleware
import state_middleware.testing
from state_middleware import MemoryStore, ResponsesStateMiddleware
from state_middleware.testing import ScriptedResponsesApp

app = ResponsesStateMiddleware(ScriptedResponsesApp(), MemoryStore())

async def turn(request):
    body = json.dumps(request).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []
    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}
    async def send(message):
        sent.append(message)
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/responses", "raw_path": b"/v1/responses", "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 1), "server": ("test", 80),
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 200, sent
    return json.loads(b"".join(m.get("body", b"") for m in sent[1:]))

async def chain():
    first = await turn({"model": "m", "input": "Hello"})
    second = await turn({"model": "m", "input": "Again", "previous_response_id": first["id"]})
    return second["output"][0]["content"][0]["text"]

def failure(action):
    try:
        action()
    except ImportError as exc:
        return [type(exc).__name__, str(exc)]
    return None

def serve():
    from state_middleware import cli
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["serve", "--upstream", "http://127.0.0.1:9/v1"])
    return [code, err.getvalue().strip()]

def version():
    from state_middleware import cli
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        cli.main(["--version"])
    return out.getvalue().strip()

print(json.dumps({
    "file": state_middleware.__file__,
    "chain": asyncio.run(chain()),
    "proxy": failure(lambda: importlib.import_module("state_middleware.proxy")),
    "redis": failure(lambda: state_middleware.RedisStore.from_url("redis://127.0.0.1:9/0")),
    "testing": failure(lambda: state_middleware.testing.StreamingASGITransport),
    "metrics": failure(lambda: importlib.import_module("state_middleware.metrics")),
    "serve": serve(),
    "version": version(),
}))
"""


def _run(script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert Path(result["file"]).resolve() == ROOT / "state_middleware" / "__init__.py"
    return result


@pytest.fixture(scope="module")
def without_extras() -> dict[str, Any]:
    return _run(WITHOUT_EXTRAS, *EXTRAS_MODULES)


def test_the_core_imports_nothing_but_its_three_dependencies() -> None:
    added = set(_run(WALK_MODULES)["added"])
    assert "state_middleware" in added
    assert added <= ALLOWED_IMPORTS, sorted(added - ALLOWED_IMPORTS)


def test_the_middleware_chains_turns_without_any_extra(without_extras: dict[str, Any]) -> None:
    assert without_extras["chain"] == "[3 items] Again"


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ("proxy", MISSING_PROXY_MESSAGE),
        ("redis", MISSING_REDIS_MESSAGE),
        ("testing", MISSING_TESTING_MESSAGE),
        ("metrics", MISSING_METRICS_MESSAGE),
    ],
)
def test_a_part_used_without_its_extra_names_the_extra(
    without_extras: dict[str, Any], part: str, message: str
) -> None:
    kind, text = without_extras[part]
    assert kind in ("ImportError", "ModuleNotFoundError")
    assert text == message
    assert f'pip install "state-middleware[{part}]"' in text


def test_serve_without_its_extra_names_it_and_version_still_works(
    without_extras: dict[str, Any],
) -> None:
    assert without_extras["serve"] == [1, MISSING_SERVE_MESSAGE]
    assert 'pip install "state-middleware[serve]"' in MISSING_SERVE_MESSAGE
    assert without_extras["version"] == f"state-middleware {state_middleware.__version__}"


def test_create_app_takes_every_middleware_option_with_the_same_default() -> None:
    from state_middleware.proxy import create_app

    middleware = inspect.signature(ResponsesStateMiddleware).parameters
    proxy = inspect.signature(create_app).parameters
    for name, parameter in middleware.items():
        if name == "app":
            continue
        assert name in proxy, name
        assert proxy[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        if name == "upstream_api":  # None: read from the environment, else the default
            assert parameter.default == _defaults.UPSTREAM_API
        else:
            assert proxy[name].default == parameter.default, name


def test_the_version_has_one_source() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "state_middleware/__init__.py"


def test_the_core_install_needs_only_the_core_dependencies() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {requirement.partition(">")[0] for requirement in project["dependencies"]}
    assert names == CORE_DEPENDENCIES
    extras = project["optional-dependencies"]
    assert {"proxy", "serve", "redis", "testing", "metrics", "test", "dev"} <= set(extras)


def test_only_the_middleware_module_imports_the_bridge() -> None:
    """The core (pipeline, stores, records, endpoints) never imports the chat bridge;
    the middleware, where the options are read, hands the pipeline a bridge upstream."""
    package = Path(state_middleware.__file__).parent
    importers = set()
    for path in sorted(package.rglob("*.py")):
        if "_bridge" in path.relative_to(package).parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and "_bridge" in (node.module or ""):
                importers.add(path.relative_to(package).as_posix())
            if isinstance(node, ast.Import) and any("_bridge" in a.name for a in node.names):
                importers.add(path.relative_to(package).as_posix())
    assert importers == {"_middleware.py"}
