"""Run ``cli.py`` and SIGKILL the process at the N-th database event of one kind (tests only).

    python -m tests.killpoint execute 17 -- nightly      # before the 17th SQL statement
    python -m tests.killpoint commit 3 -- nightly        # inside the 3rd commit, before it lands

With N = 0 nothing is killed and the totals are printed to stderr at exit, so a test can
spread its kill points over a whole run.
"""

import atexit
import os
import runpy
import signal
import sys

from sqlalchemy import event
from sqlalchemy.engine import Engine

from pipelines.config import PROJECT_ROOT

kind, target = sys.argv[1], int(sys.argv[2])
seen = {"execute": 0, "commit": 0}


def _hit(name):
    def count(*_args, **_kwargs):
        seen[name] += 1
        if name == kind and seen[name] == target:
            os.kill(os.getpid(), signal.SIGKILL)

    return count


event.listen(Engine, "before_cursor_execute", _hit("execute"))
event.listen(Engine, "commit", _hit("commit"))  # fires before the database commits
atexit.register(lambda: print(f"killpoint totals: execute={seen['execute']} commit={seen['commit']}", file=sys.stderr))
sys.argv = [str(PROJECT_ROOT / "cli.py"), *sys.argv[sys.argv.index("--") + 1 :]]
runpy.run_path(sys.argv[0], run_name="__main__")
