"""What several Cloudex components share: wire messages, money, market specs, names, klines."""
