"""Internals of the on-call agent (``on_call_agent.py`` is the entry point)."""
