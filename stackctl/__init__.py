"""Runs the demo stack (process manager, replicas, load balancer, Prometheus, Alertmanager, agent)
for ``make demo``, the end-to-end tests and the benchmarks."""
