"""Streaming with aiokafka: how to reach Kafka (`kafka`), the embedded broker, the producer,
the micro-batched consumer with its sink, and `stream run`."""
