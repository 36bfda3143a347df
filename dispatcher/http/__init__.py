"""`dispatcher serve`: the HTTP API, the Catapush status callbacks, the probes, the metrics
and the ops console, all on one aiohttp application (`dispatcher.http.app`)."""
