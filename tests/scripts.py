"""Load the scripts of benchmark/ and tools/ as modules, to call their main(argv)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script(relative: str):
    path = ROOT / relative
    folder = str(path.parent)
    if folder not in sys.path:  # benchmark scripts import their sibling common.py
        sys.path.insert(0, folder)
    name = "script_" + relative.replace("/", "_").removesuffix(".py")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
