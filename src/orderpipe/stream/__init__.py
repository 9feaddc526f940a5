"""Streaming with aiokafka: embedded broker, producer, micro-batched consumer, and `stream run`."""
