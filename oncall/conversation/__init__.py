"""The on-call engineer's WhatsApp replies: understood (``parser``, or the model) and acted on (``handler``)."""
