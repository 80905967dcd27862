"""Investigation engines: ``model`` (OpenAI-compatible function calling) and ``offline`` (deterministic),
both behind ``base.Engine`` and filling the same ``oncall.diagnosis.Diagnosis``."""
