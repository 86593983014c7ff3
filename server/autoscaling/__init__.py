"""Latency-driven autoscaling: the policy, its Ray Serve and Prometheus faces, and a simulator."""
