"""The Ray Serve host: the same core as the standalone host, spread over Serve deployments.

- variant.py: one deployment per version of a `ray.placement: deployment` model, holding its
  runtime and dynamic batcher and reporting latency stats to the latency autoscaling policy;
- remote_models.py: the ingress's stand-in for a version, a Runtime forwarding to its handle;
- ingress.py: the ingress deployment, the data plane and router of the standalone host behind
  Serve's gRPC proxy (OIP, Recommend) and HTTP proxy (REST), or on each replica's own ports
  under Serve's direct ingress, with the co-located (`ray.placement: ingress`) models;
- deployments.py: deployment names and options from the config file, and Serve's fast-path
  environment;
- app.py: the Serve application, `switchyard serve --engine ray` and the Serve config YAML of
  `switchyard render ray`.

variant.py and ingress.py hold plain classes; app.py turns them into deployments.
"""
