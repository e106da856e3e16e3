"""Exposition: rendering the stores, the prometheus_client collector, answering a scrape
(negotiation, gzip, credentials, concurrency) and the separate metrics listener."""
