"""The ZenML oracle: ZenML's own ``ServerConfiguration.get_server_config()`` (PyPI
zenml, pinned in scripts/zenml-oracle) on an environment given per case.

One JSON object per line in: ``{"id": "...", "env": {"NAME": "value", ...}}``.
One JSON object per line out (see tests/zenml/README.md):

    {"id", "version",
     "read":       {"ZENML_SERVER_X": "x", ...}   # variable -> the field ZenML reads it as
     "ignored":    ["ZENML_KUBERNETES_...", ...]  # variables get_server_config() skips
     "effective":  {"x": value, ...}              # those fields' values after validation
     "extra":      {"y": value, ...}              # read, but not a field of this ZenML
     "workload_manager_enabled": bool,
     "warnings":   ["...", ...]                   # ZenML's log records >= WARNING and
                                                  # Python warnings while parsing
     "deprecations": ["...", ...]                 # those of them that say "deprecated"
     "error":      "Type: message" or absent}

``--check`` only imports the module (used by scripts/zenml-oracle after installing).
"""

import json
import logging
import os
import sys
import warnings

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stubs import install_package_shells  # noqa: E402

ROOT = install_package_shells()

from zenml.config import server_config  # noqa: E402
from zenml.constants import (  # noqa: E402
    ENV_ZENML_SERVER_PREFIX,
    ENV_ZENML_SERVER_PRO_PREFIX,
)

with open(os.path.join(ROOT, "VERSION")) as f:
    VERSION = f.read().strip()

# What the oracle keeps of its own environment while a case runs.
KEEP = ("PATH", "HOME", "LANG")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def read_as(name: str):
    """The field get_server_config() reads `name` as (its own rule), or None."""
    if name.startswith(ENV_ZENML_SERVER_PRO_PREFIX):
        return None
    if name.startswith(ENV_ZENML_SERVER_PREFIX):
        return name[len(ENV_ZENML_SERVER_PREFIX) :].lower()
    if name in server_config.SUPPORTED_STANDARD_OTEL_ENV_VARS:
        return name.lower()
    return None


def run(case: dict) -> dict:
    env = {k: str(v) for k, v in (case.get("env") or {}).items()}
    out: dict = {"id": case.get("id"), "version": VERSION}
    read = {k: read_as(k) for k in sorted(env) if env[k] != ""}
    out["read"] = {k: f for k, f in read.items() if f is not None}
    out["ignored"] = sorted(k for k in env if read.get(k) is None)
    kept = {k: os.environ[k] for k in KEEP if k in os.environ}
    os.environ.clear()
    os.environ.update(kept)
    os.environ.update(env)
    handler = Records()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                config = server_config.ServerConfiguration.get_server_config()
            except Exception as e:  # the answer, not a failure of the oracle
                config = None
                out["error"] = f"{type(e).__name__}: {e}"
        messages = handler.messages + [str(w.message) for w in caught]
    finally:
        root.removeHandler(handler)
    out["warnings"] = messages
    out["deprecations"] = [m for m in messages if "deprecat" in m.lower()]
    if config is not None:
        dumped = config.model_dump(mode="json")
        fields = type(config).model_fields
        out["effective"] = {
            f: dumped[f] for f in sorted(set(out["read"].values())) if f in fields
        }
        # Fields berth sets, also when a case leaves them out (ZenML's defaults).
        for f in ("workload_manager_implementation_source", "max_concurrent_snapshot_runs"):
            out["effective"].setdefault(f, dumped[f])
        out["extra"] = dict(sorted((config.model_extra or {}).items()))
        out["workload_manager_enabled"] = config.workload_manager_enabled
    return out


def main() -> None:
    if "--check" in sys.argv[1:]:
        print(f"zenml {VERSION}: {server_config.__file__}")
        return
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = run(json.loads(line))
        except Exception as e:  # noqa: BLE001
            answer = {"oracle_error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(answer, sort_keys=True) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
