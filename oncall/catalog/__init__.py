"""The service catalog: which services the agent watches, where their signals are, who owns them."""
