"""Streaming with aiokafka: Kafka in, the shared cleaning, the database and the model's scores out.

Its modules, from the leaf up:

- `kafka`: the endpoint (address, SASL/TLS) every client is built from, client start-up, one-line
  errors (the leaf: it imports no other stream module).
- `broker`: the embedded broker (tansu) and `kafka_endpoint`, the configured cluster or one.
- `partitioner`: Kafka's murmur2 partitioner, vectorised over a chunk's keys.
- `messages`: records -> clean rows and dead letters, the DLQ topic and its headers, offsets.
- `topics`: a topic and its dead-letter topic created when missing (`stream topic create`).
- `producer`: JSON Lines or etl's table -> Kafka (`stream produce`).
- `errors`: the error taxonomy of the write path (`db.errors` for the database, Kafka's).
- `metrics`: latency percentiles in fixed memory.
- `observe`: the consumer's Prometheus metrics and their HTTP endpoint.
- `runtime`: the collector's settings, the worker threads and the backoff of the consumer.
- `sink`: a clean micro-batch -> upserts and predictions, in one transaction.
- `batches`: batch assembly: records gathered, cleaned and scored ahead, refused rows isolated.
- `offsets`: partition and offset bookkeeping: owned records, commits, positions, joining.
- `lifecycle`: the consumer's options, start (sink and clients together) and end.
- `consumer`: the micro-batched consumer loop (`stream consume`).
- `run`: `stream run` (producer and consumer in one process), and the commands with settings.
- `reader`: partitions read by hand, without a group: checked end offsets, batches up to them.
- `admin`: operator views: the group's lag and the DLQ (`stream status`), `stream dlq replay`.
- `dead_letters`: the dead letters as the report reads them.
"""
