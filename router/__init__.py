"""Traffic routing: endpoints, variants, A/B splits, shadows and canary rollouts.

Pure logic: plain dataclasses and numpy arrays in and out, no transport (grpc, HTTP) and no
metrics library. The data plane (server/) calls `Router.route` per request, runs the shadows it
names through a `ShadowLauncher`, and feeds a `RolloutController` its observations.
"""
