"""Shared set-up of the Python binding's tests.

The build directory is RANKMESH_BUILD_DIR (default: the repository's build/); the importable
package is <build>/python/rankmesh and the launcher <build>/tools/rankmesh/rankmesh. When the
module is not built every test is skipped, saying so.
"""
import glob
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD_DIR = os.path.abspath(os.environ.get("RANKMESH_BUILD_DIR",
                                           os.path.join(HERE, "..", "..", "build")))
PYTHON_DIR = os.path.join(BUILD_DIR, "python")
BUILT = bool(glob.glob(os.path.join(PYTHON_DIR, "rankmesh", "_rankmesh*.so")))
NOT_BUILT = (f"rankmesh's Python module is not built: no {PYTHON_DIR}/rankmesh/_rankmesh*.so "
             "(configure with pybind11 and build, or set RANKMESH_BUILD_DIR)")

if BUILT and PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def pytest_collection_modifyitems(config, items):
    if BUILT:
        return
    skip = pytest.mark.skip(reason=NOT_BUILT)
    for item in items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def build_dir():
    if not BUILT:
        pytest.skip(NOT_BUILT)
    return BUILD_DIR


@pytest.fixture(scope="session")
def launcher(build_dir):
    path = os.path.join(build_dir, "tools", "rankmesh", "rankmesh")
    if not os.access(path, os.X_OK):
        pytest.skip(f"the launcher {path} is not built")
    return path


@pytest.fixture(scope="session")
def child_env(build_dir):
    """The environment for a process that imports rankmesh from the build tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PYTHON_DIR, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("RANKMESH_TRANSPORT", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env
