#!/usr/bin/env python3
"""Real YAML readers for tests/yaml.rs: PyYAML (YAML 1.1, what Mage reads with) and
ruamel.yaml (YAML 1.2), both pure Python, as pinned in `scripts/mage-oracle`'s venv.

Reads one YAML stream on stdin; prints one JSON object: for each reader, the list of the
documents it read, or {"error", "read"} with the documents read before the error. Anything
JSON cannot say exactly (a date, a set, a non-string key, inf, nan) comes out as the string
"\\u0001<type> <repr>", which no value of the test holds, so it cannot pass for a string.

    $(scripts/mage-oracle python) tests/yaml/readers.py < stream.yaml
"""

import json
import math
import sys

import ruamel.yaml
import yaml


def other(x):
    return f'\x01{type(x).__name__} {x!r}'


def plain(x):
    """x as JSON values, type for type: bool, int, float, str, None, lists, str keys."""
    if isinstance(x, dict):
        return {k if type(k) is str else other(k): plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [plain(v) for v in x]
    if x is None or type(x) in (bool, int, str) or (type(x) is float and math.isfinite(x)):
        return x
    return other(x)


def read(load_all, text):
    docs = []
    try:
        for doc in load_all(text):
            docs.append(plain(doc))
    except Exception as exc:
        return {'error': f'{type(exc).__name__}: {exc}', 'read': docs}
    return docs


def main():
    text = sys.stdin.buffer.read().decode('utf-8')
    out = {
        'versions': {'PyYAML': yaml.__version__, 'ruamel.yaml': ruamel.yaml.__version__},
        'pyyaml': read(yaml.safe_load_all, text),
        'ruamel': read(ruamel.yaml.YAML(typ='safe', pure=True).load_all, text),
    }
    json.dump(out, sys.stdout)


if __name__ == '__main__':
    main()
