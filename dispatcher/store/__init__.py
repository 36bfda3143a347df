"""What the dispatcher keeps in Redis, and how it talks to Redis: every key name (`keys`),
the queue protocol (`queue`), receipts and claims, dead letters, status callbacks, cancel
marks, throughput counters, the overview and an intent's status, the connection factory
(`connection`) and its error translation (`faults`), and a private `redis-server` for trials
(`localredis`)."""
