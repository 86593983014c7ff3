"""Ingress, data plane and hosts of the Switchyard gateway."""
