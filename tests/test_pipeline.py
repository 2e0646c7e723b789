import re

import joblib
import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from skmeta import ProtoNetClassifier, Task, TaskWise, adapt


def shifted(tasks, rng):
    """Each task's features scaled and shifted by its own amounts: per-task
    standardisation removes exactly this."""
    out = []
    for t in tasks:
        scale, shift = rng.uniform(0.5, 3), rng.normal(0, 3, t.X_support.shape[1])
        out.append(Task(t.X_support * scale + shift, t.y_support,
                        t.X_query * scale + shift, t.y_query))
    return out


def test_taskwise_fits_each_task_on_its_support_set(test_tasks):
    task = test_tasks[0]
    [out] = TaskWise(StandardScaler()).fit_transform([task])
    expected = StandardScaler().fit(task.X_support)
    np.testing.assert_allclose(out.X_support, expected.transform(task.X_support))
    np.testing.assert_allclose(out.X_query, expected.transform(task.X_query))
    np.testing.assert_array_equal(out.y_query, task.y_query)
    X = np.arange(12.0).reshape(6, 2)
    [(Xt, y)] = TaskWise(StandardScaler()).fit_transform([(X, [0, 1] * 3)])
    np.testing.assert_allclose(Xt.mean(0), 0, atol=1e-12)
    [four] = TaskWise(StandardScaler()).transform([(X, [0, 1] * 3, X, [0, 1] * 3)])
    assert isinstance(four, tuple) and len(four) == 4


def test_pipeline_fits_scores_and_adapts_on_task_lists(train_tasks, test_tasks,
                                                        tmp_path):
    rng = np.random.default_rng(0)
    train, test = shifted(train_tasks[:200], rng), shifted(test_tasks[:30], rng)
    pipe = make_pipeline(TaskWise(StandardScaler()),
                         ProtoNetClassifier(max_epochs=2, random_state=0))
    pipe.fit(train)
    assert pipe.score(test) > 0.5
    assert len(pipe.predict(test[:2])) == 2
    task = test[0]
    adapted = adapt(pipe, task.X_support, task.y_support)
    assert isinstance(adapted, Pipeline)
    assert isinstance(adapted[0], StandardScaler)
    np.testing.assert_array_equal(adapted.predict(task.X_query),
                                  pipe.predict([task])[0])
    joblib.dump(adapted, tmp_path / "adapted.joblib")
    np.testing.assert_array_equal(
        joblib.load(tmp_path / "adapted.joblib").predict(task.X_query),
        adapted.predict(task.X_query))
    assert pipe.get_params()["taskwise__transformer__with_mean"] is True


def test_adapt_on_a_plain_meta_learner_and_bad_pipelines(protonet, test_tasks):
    task = test_tasks[0]
    np.testing.assert_array_equal(
        adapt(protonet, task.X_support, task.y_support).predict(task.X_query),
        protonet.adapt(task.X_support, task.y_support).predict(task.X_query))
    bad = Pipeline([("pca", PCA(2)), ("learner", protonet)])
    with pytest.raises(TypeError, match=re.escape(
            "Pipeline step 'pca' is a PCA; only TaskWise steps can be adapted to "
            "a task.")):
        adapt(bad, task.X_support, task.y_support)


def test_taskwise_rejects_a_bare_array():
    with pytest.raises(TypeError, match="^Expected a task collection"):
        TaskWise(StandardScaler()).fit(np.ones((4, 2)))
