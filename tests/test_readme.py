"""The README's example runs as written (on fewer training tasks)."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"
# The changes made to the README's code blocks, to keep the tests fast: fewer
# training tasks and epochs.
SUBSTITUTIONS = [{"n_tasks=1000": "n_tasks=40"},
                 {"make_sinusoid_tasks(200": "make_sinusoid_tasks(30",
                  "max_epochs=5": "max_epochs=1"}]


def readme_code(block):
    """The README's Python block number ``block``, with its SUBSTITUTIONS
    applied (each must apply exactly once, so the test notices if the README
    changes)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == len(SUBSTITUTIONS)
    code = blocks[block]
    for old, new in SUBSTITUTIONS[block].items():
        assert code.count(old) == 1, f"README code no longer has {old!r} once"
        code = code.replace(old, new)
    return code


def run(block):
    namespace, out = {}, io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_code(block), "README.md", "exec"), namespace)
    return namespace, out.getvalue()


def test_readme_search_with_a_task_scorer_runs():
    namespace, out = run(1)
    best = namespace["search"].best_params_
    assert best["module__hidden_sizes"] in [(16,), (32, 32)]
    assert out.strip() == str(best)
    assert namespace["search"].best_score_ < 0  # a negated MSE


def test_readme_example_runs_adapts_and_prints_its_score():
    namespace, out = run(0)
    clf, task = namespace["clf"], namespace["new_task"]
    assert clf.score(task.X_query, task.y_query) > 0.4  # chance is 0.2
    assert set(clf.classes_) == set(task.y_support)
    [printed] = re.findall(r"accuracy on a new task: (\d\.\d\d)", out)
    assert float(printed) == round(clf.score(task.X_query, task.y_query), 2)
