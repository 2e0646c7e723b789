"""The README's example runs as written (on fewer training tasks)."""

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_example_runs_and_adapts():
    [code] = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = code.replace("n_tasks=1000", "n_tasks=40")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    clf, task = namespace["clf"], namespace["new_task"]
    assert clf.score(task.X_query, task.y_query) > 0.4  # chance is 0.2
    assert set(clf.classes_) == set(task.y_support)
