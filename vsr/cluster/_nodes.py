"""Node-level helpers that run as Ray tasks before any worker exists: light by design.

:func:`check_paths` runs once on every node before the job starts. A Ray task defined
in a module is unpickled by importing that module, and importing anything of vsr
imports PyTorch (seconds of CPU per process on a small node, while the workers are
starting). This module imports only the standard library and Ray, and is pickled *by
value* (:func:`ray.cloudpickle.register_pickle_by_value`), so the check runs on the
idle workers Ray starts with each node without importing vsr at all.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import ray
import ray.cloudpickle

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def node_label() -> str:
    """A node as reports name it: its address and the start of its Ray node id."""
    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"


@ray.remote(num_cpus=0)
def check_paths(inputs: list[dict[str, Any]], folders: list[str]) -> list[str]:
    """On one node: the inputs it cannot see as the driver does, and the output folders it cannot write."""
    problems = []
    where = node_label()
    for ident in inputs:
        path = ident["path"]
        try:
            st = os.stat(path)
        except OSError as exc:
            problems.append(f"node {where} cannot see input {path} ({exc.strerror or exc})")
            continue
        if st.st_size != ident["size"] or st.st_mtime_ns != ident["mtime_ns"]:
            problems.append(f"node {where} sees another file at {path} (size or time differ from the driver's)")
        elif not os.access(path, os.R_OK):
            problems.append(f"node {where} cannot read input {path} (permission denied)")
    for folder in folders:
        if not os.path.isdir(folder):
            problems.append(f"node {where} cannot see the output folder {folder}")
        elif not os.access(folder, os.W_OK):
            problems.append(f"node {where} cannot write to the output folder {folder}")
    return problems


__all__ = ["check_paths", "node_label"]
