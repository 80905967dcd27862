"""The agent's outbound and inbound channels: WhatsApp (Twilio) and Jira Cloud."""
