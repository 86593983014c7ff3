"""Errors cross process boundaries pickled: a Ray variant deployment's refusal reaches the
ingress inside Serve's RayTaskError, and must arrive as the same error (503 / RESOURCE_EXHAUSTED
with its reason), not as an unpickling TypeError that the ingress can only answer with 500."""

from __future__ import annotations

import pickle

import pytest

from switchyard.runtimes import errors

EXAMPLES = [
    errors.Overloaded("model 'ranker:1': the queue is full; retry later", "queue_full"),
    errors.AuthThrottled("too many failed authentications; retry in 30 s", 30),
    errors.InvalidArgument("tensor 'features': expected FP32"),
    errors.Unavailable("model 'ranker' is unavailable; retry later"),
]


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_errors_survive_pickling_whole(error: errors.SwitchyardError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)  # reason, retry_after_s
