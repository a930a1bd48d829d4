"""Alerts: rules over the store become alerts (pending → firing → resolved), alerts become
notifications through an Alertmanager-style route tree, notifications are delivered from a
persistent outbox with retries. ``gpufleet controller run`` drives it all.

Seams (each a module, each testable alone):

- ``rules`` (with ``rulefile``, ``templates``): the rule file (YAML) and its validation;
  ``default_rules.yaml`` is the shipped pack.
- ``evaluate`` (with ``series``, ``event_rules``, ``absence``, ``conditions``): rules × store → the
  alert conditions true now (labels, annotations, value).
- ``lifecycle``: conditions → rows of the ``alerts`` table (fingerprint, state, times).
- ``health``: GPU and node health states (``health_states`` table) from alerts and events.
- ``routing``: ``alerts`` rows × route tree × silences × inhibitions → notifications in the outbox
  (``notification_groups`` keeps group_wait / group_interval / repeat_interval).
- ``notify`` (with ``payload``): receivers (Alertmanager webhook body v4, byte for byte; Slack;
  Alertmanager v2 API), HMAC signing.
- ``config`` (with ``fields``, ``matchers``): the alerting configuration file; ``silences``.
- ``outbox``: claims due notifications, delivers, records every attempt, retries with backoff.
- ``controller``: the loop, its configuration, and the lease that keeps a standby from double-sending.
"""
