"""Test-only fault: SIGKILL inside DVC's write of `dvc.lock`, at a chosen byte, once.

Put this folder on PYTHONPATH for a `dvc` process (Python imports `sitecustomize` at start-up)
and set LLM_PIPELINE_TEST_KILL_LOCK_WRITE=<fraction in [0, 1)> and LLM_PIPELINE_TEST_KILL_MARKER=<a
path>. The first time any process so started rewrites dvc.lock, it writes the first <fraction> of the
new file's bytes (what DVC's in-place write has put on disk when a kill lands there), creates the
marker, and is SIGKILLed; later writes (the marker exists) go through untouched. With
LLM_PIPELINE_TEST_KILL_TREE_OF=<text> the kill takes the nearest ancestor whose command line contains
<text> (e.g. a Prefect worker) and everything under it, at that same moment. With
LLM_PIPELINE_TEST_KILL_ARGV=<word> only a process with that word in its arguments (a stage name) fires.

Nothing of DVC's installed files changes: the hook wraps its writer function in this process only.
"""

from __future__ import annotations

import os

if os.environ.get("LLM_PIPELINE_TEST_KILL_LOCK_WRITE") is not None:
    import io
    import signal
    import sys

    try:
        import dvc.utils.serialize._common as _common
    except ImportError:  # a Python process that is not DVC's and has no DVC: nothing to wrap
        _common = None

    def _kill_targets() -> list:
        import psutil

        me = psutil.Process()
        needle = os.environ.get("LLM_PIPELINE_TEST_KILL_TREE_OF")
        if not needle:
            return [me]
        for parent in me.parents():
            if needle in " ".join(parent.cmdline()):
                return [*parent.children(recursive=True), parent]
        return [me]

    if _common is not None:
        _original = _common._dump_data

        def _dump_then_die(path, data, dumper, fs=None, **dumper_args):
            marker = os.environ["LLM_PIPELINE_TEST_KILL_MARKER"]
            argv = os.environ.get("LLM_PIPELINE_TEST_KILL_ARGV")
            chosen = argv is None or argv in sys.argv
            if os.path.basename(os.fspath(path)) != "dvc.lock" or os.path.exists(marker) or not chosen:
                return _original(path, data, dumper, fs=fs, **dumper_args)
            buffer = io.StringIO()
            dumper(data, buffer, **dumper_args)
            text = buffer.getvalue().encode("utf-8")
            cut = int(len(text) * float(os.environ["LLM_PIPELINE_TEST_KILL_LOCK_WRITE"]))
            with open(path, "wb") as fh:  # in place, as DVC writes it: truncate, then the bytes so far
                fh.write(text[:cut])
                fh.flush()
                os.fsync(fh.fileno())
            with open(marker, "w") as fh:
                fh.write(f"{cut} of {len(text)} bytes\n")
            targets = _kill_targets()
            for process in targets:
                if process.pid != os.getpid():
                    process.kill()
            os.kill(os.getpid(), signal.SIGKILL)

        import dvc.utils.serialize._yaml as _yaml

        _common._dump_data = _dump_then_die  # what modify_yaml (Lockfile.dump_stages) calls
        _yaml._dump_data = _dump_then_die  # what dump_yaml (Lockfile.remove_stage) calls
