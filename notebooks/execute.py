#!/usr/bin/env python3
"""Execute notebooks headless in the project's own pinned Python environment.

    python3 notebooks/execute.py notebooks/*.ipynb        # prints what each notebook printed
    python3 notebooks/execute.py --out DIR notebooks/x.ipynb   # also keeps the executed copy

The first call creates a virtual environment (by default `target/notebook-venv`, or
`$QLAB_NOTEBOOK_VENV`) and installs `notebooks/requirements.txt` into it, pinned to the
versions the notebooks were written against; later calls reuse it until that file
changes. Concurrent calls (the CLI tests run several at once) wait on a lock instead of
installing twice. A notebook whose cell raises fails the whole call with the cell and
its traceback; nothing is skipped.

Why our own driver and not `jupyter nbconvert --execute`: nbconvert pulls in a web
toolchain (bleach, jinja2, mistune, ...) for its export formats that executing a
notebook never needs; nbclient is the part of it that runs cells.
"""

import hashlib
import re
import os
import subprocess
import sys
import venv
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent
REPO = NOTEBOOKS.parent
REQUIREMENTS = NOTEBOOKS / "requirements.txt"


def environment_dir() -> Path:
    return Path(os.environ.get("QLAB_NOTEBOOK_VENV", REPO / "target" / "notebook-venv"))


def ensure_environment() -> Path:
    """The venv's python, installing the pinned requirements when they changed."""
    import fcntl

    env = environment_dir()
    python = env / "bin" / "python"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = env / "requirements.sha256"
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / (env.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text().strip() == wanted and python.exists():
            return python
        print(f"notebooks: installing {REQUIREMENTS.relative_to(REPO)} into {env} (once)", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(env)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
             "-r", str(REQUIREMENTS)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        if install.returncode != 0:
            sys.exit(f"notebooks: pip could not install {REQUIREMENTS} (is PyPI reachable?):\n{install.stdout}")
        stamp.write_text(wanted + "\n")
        return python


def execute(paths, out_dir):
    import nbclient
    import nbformat

    failed = 0
    for path in paths:
        path = Path(path).resolve()
        notebook = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(
            notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(path.parent)}}
        )
        print(f"=== {path.name}", flush=True)
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as error:
            failed += 1
            # Without the terminal colours the kernel puts in tracebacks, so a test log reads cleanly.
            plain = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
            print(f"{path.name}: a cell failed\n{plain}", file=sys.stderr, flush=True)
        for cell in notebook.cells:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream" and output.get("name") == "stdout":
                    sys.stdout.write(output["text"])
        sys.stdout.flush()
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, out_dir / path.name)
    return failed


def main():
    args = sys.argv[1:]
    out_dir = None
    if len(args) >= 2 and args[0] == "--out":
        out_dir, args = Path(args[1]).resolve(), args[2:]
    if not args or any(a.startswith("-") for a in args):
        sys.exit("usage: python3 notebooks/execute.py [--out DIR] NOTEBOOK.ipynb...")
    if os.environ.get("QLAB_RUN_DIR"):
        # The kernels run in notebooks/; a run directory is named from where we were called.
        os.environ["QLAB_RUN_DIR"] = str(Path(os.environ["QLAB_RUN_DIR"]).resolve())
    if os.environ.get("QLAB_NOTEBOOK_IN_VENV") != "1":
        python = ensure_environment()
        child = dict(os.environ, QLAB_NOTEBOOK_IN_VENV="1")
        os.execve(str(python), [str(python), __file__, *sys.argv[1:]], child)
    sys.exit(1 if execute(args, out_dir) else 0)


if __name__ == "__main__":
    main()
