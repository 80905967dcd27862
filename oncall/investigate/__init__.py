"""The investigation of an incident: the tools, the function-calling loop, the prompts, the engines
(model and offline) and the investigator that runs them and records every tool call."""
