"""The infrastructure contract: apps, desired state, autoscaling and SLA decisions.

``models`` (the App), ``kube`` (Deployment + HPA documents to Apps), ``store``
(desired state and events in SQLite), ``autoscale`` (the HPA rule) and ``sla``
(bad instance or overload). Everything here is plain Python over explicit time:
the controllers that act on it live beside it and call these pure functions.
"""
