"""The on-call roster (``ONCALL_FILE``): who is on call, who is paged for a service, who may send commands.

``config`` reads and validates the YAML file (errors name the file, line and reason); ``rotation``
says who is on call for a team at an instant; ``chain`` turns a service into the escalation chain
of its owning team; ``answer`` writes the "who is on call?" reply. Everything here is pure: no I/O
but reading the file, no clock but the instant the caller passes.
"""
