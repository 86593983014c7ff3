"""The Ray Serve host: the same core as the standalone host, spread over Serve deployments.

- variant.py: one deployment per model version, holding its runtime and dynamic batcher and
  reporting latency stats to the latency autoscaling policy;
- remote_models.py: the ingress's stand-in for a version, a Runtime forwarding to its handle;
- ingress.py: the ingress deployment, the data plane and router of the standalone host behind
  Serve's gRPC proxy (OIP, Recommend) and HTTP proxy (REST);
- deployments.py: deployment names and options from the config file;
- app.py: the Serve application, `switchyard serve --engine ray` and the Serve config YAML of
  `switchyard render ray`.

variant.py and ingress.py hold plain classes; app.py turns them into deployments.
"""
