"""Remediation: the closed action catalogue, guardrails, proposer, executor through the control plane, verifier."""
