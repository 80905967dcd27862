"""The backends behind the investigation tools: Prometheus, logs, recent changes and source code.

Each source speaks one system's wire format over the shared ``httpx.AsyncClient`` with a timeout
per call and retries on connection errors for idempotent reads.
"""
