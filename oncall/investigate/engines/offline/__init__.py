"""The deterministic offline engine: planned tool rounds, pure detectors over the observations, a verdict."""
