"""The worker runtime: worker processes and their supervisor (`supervisor`), the consumer of
the queues (`consumer`), one delivery attempt (`delivery`), what a process opens
(`resources`), and what keeps it honest about its state: health, preflight, probes,
metrics, orphan audits and outcomes that wait for Redis (`durable`)."""
