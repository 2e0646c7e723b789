"""The README's example runs as written (on fewer training tasks)."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"
# The one change made to the README's code, to keep the test fast: meta-train
# on 40 episodes instead of 1000.
SUBSTITUTIONS = {"n_tasks=1000": "n_tasks=40"}


def readme_code():
    """The README's one Python block, with SUBSTITUTIONS applied (each must
    apply exactly once, so the test notices if the README changes)."""
    [code] = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    for old, new in SUBSTITUTIONS.items():
        assert code.count(old) == 1, f"README code no longer has {old!r} once"
        code = code.replace(old, new)
    return code


def test_readme_example_runs_adapts_and_prints_its_score():
    namespace, out = {}, io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_code(), "README.md", "exec"), namespace)
    clf, task = namespace["clf"], namespace["new_task"]
    assert clf.score(task.X_query, task.y_query) > 0.4  # chance is 0.2
    assert set(clf.classes_) == set(task.y_support)
    [printed] = re.findall(r"accuracy on a new task: (\d\.\d\d)", out.getvalue())
    assert float(printed) == round(clf.score(task.X_query, task.y_query), 2)
