"""Load the scripts of apps/, benchmark/ and tools/ as modules, to call their main(argv).

By file path: the scripts are not a package, and what they share is the installed
library (mobileface.cli.common, mobileface.eval.bench), so nothing goes on sys.path.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script(relative: str):
    """The script at ``relative`` (to the repository) as a module, loaded once."""
    path = ROOT / relative
    name = "script_" + relative.replace("/", "_").removesuffix(".py")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
