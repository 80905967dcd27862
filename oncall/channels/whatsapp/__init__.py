"""WhatsApp through Twilio: message text (``format``), delivery (``sender``) and inbound webhooks (``inbound``)."""
