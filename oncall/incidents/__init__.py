"""From an Alertmanager notification to an incident, and everything that changes its status.

``payload`` validates the webhook body, ``ingest`` turns a notification into incident and alert rows,
``lifecycle`` is the one place that changes incident and investigation status (open, reopen,
resolve, acknowledge, investigate, fail), and ``scheduler`` runs investigations with bounded
concurrency and resumes them after a restart.
"""
