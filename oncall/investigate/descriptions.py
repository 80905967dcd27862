"""The tool descriptions the model sees, written from the incident's catalog entry."""

from __future__ import annotations

from oncall.investigate.context import ServiceContext


def _metrics_hint(context: ServiceContext) -> str:
    """Example PromQL of the service (p99 latency, up, CPU, memory) for ``query_prometheus``."""
    queries = context.queries
    if queries is None:
        return "The catalog names no Prometheus targets of this service; query by the alert's own labels."
    evidence = queries.evidence()
    examples = [evidence[k] for k in ("p99", "up", "cpu", "rss") if k in evidence]
    return (
        f"The {context.name} service's targets are {{{queries.selector}}}, one replica per `{queries.replica}` label; "
        f"e.g. {'; '.join(examples)}."
    )


def for_context(context: ServiceContext) -> dict[str, str]:
    """Description of every tool, by name, for ``context``'s service."""
    name, sources, queries = context.name, context.sources, context.queries
    logs = sources.logs
    changes = sources.changes
    code = sources.code
    version = sources.version
    return {
        "fetch_logs": f"Recent ERROR logs of the {name} service (all replicas) from "
        f"{logs.where if logs else 'nowhere'}, summarised: counts by exception_type, replica, route and file:line, "
        "the largest error groups with their message, function and versions, the newest entries and the dominant "
        "traceback tail.",
        "compute_error_rate": f"Error ratio (failed requests / all requests, 0-1) of the {name} service from "
        f"Prometheus ({queries.errors if queries else ''} over {queries.requests if queries else ''}): overall, "
        f"per replica (`{context.replica_label}`) and per route, plus requests per second per replica.",
        "query_prometheus": "Run any PromQL instant query against Prometheus. "
        + _metrics_hint(context)
        + " Returns labels and values; on bad PromQL returns Prometheus' error message.",
        "get_recent_changes": f"Recent changes of the {name} service from {changes.name if changes else 'nowhere'} "
        "(deploys with from/to version, config, scale, faults, restarts, crashes, commits) in time order with "
        "their offset in seconds from the alert's onset, and the current instances with state, version and restarts.",
        "get_deployed_versions": f"The version each {name} replica runs now ({version.where if version else ''}).",
        "fetch_code_from_github": f"Source code of a file of the {name} service ({code.where if code else ''}), "
        "read at the deployed version, with line numbers around `line` (e.g. the file:line a stack trace points at; "
        "an absolute traceback path is mapped to the repository).",
        "evaluate_alert_rule": "Find the Prometheus alerting rule of an alert (by alertname and labels) and "
        "evaluate its expression now: the rule's query, `for`, annotations, the series breaching now and the "
        "active alerts per instance with their values.",
        "get_client_view": f"What clients of the {name} service saw through its load balancer, per replica: "
        "requests/s, the share answered 5xx (the balancer's own 502 connection failures, 503 no backend and 504 "
        "upstream timeouts included), timeouts/s, failed upstream attempts by kind, client p99 and requests in "
        "flight. Stays current when replicas stop answering scrapes (their own series go stale).",
        "get_load": f"The {name} service's request rate (requests/s) now, at the alert's onset and its baseline (the "
        "median rate over the 10 minutes before the onset), per replica and in total, with the surge factor and "
        "the highest rate recently served within the latency objective (a capacity lower bound).",
        "find_similar_incidents": "Resolved incidents most like this one (score 0-1 over fault type, service, "
        "file:line, error signature, alert name and replicas), each with how it was resolved, how long it took, "
        "the action taken and its ticket.",
        "send_diagnosis": "Submit the final root-cause diagnosis. Ends the investigation. Use fault_type "
        "'none' when nothing is wrong and 'unknown' when the evidence is inconclusive.",
    }
