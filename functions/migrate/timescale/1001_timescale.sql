-- 1001 (optional): trades and klines as TimescaleDB hypertables, plus a continuous aggregate.
--
-- Only for servers that have the `timescaledb` extension (Timescale Cloud, self-managed
-- PostgreSQL). RDS and Aurora do not offer it, and this project's CI has no server with it: this
-- file has NOT been run by CI. Apply it with `python -m localgw.migrate --timescale` (or the
-- migrate function with TIMESCALE=1) after the regular migrations; the runner checks that the
-- extension is available before running it.
--
-- What changes: `trades` (monthly partitions) and `klines` become hypertables with one-week
-- chunks on their µs columns; their rows are copied over inside this transaction, so run it
-- while the tables are still small. `trade_candles_1m` is a continuous aggregate of the trades:
-- the 1m candles Timescale computes by itself, to cross-check the projection's `klines` rows.
-- Nothing else changes: the persister keeps writing the same tables (its partition helper does
-- nothing for a table that is not partitioned) and the API keeps reading `klines`.

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- Integer (µs) time: policies and continuous aggregates need to know "now" in the same unit.
CREATE OR REPLACE FUNCTION cx_now_us() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT (extract(epoch FROM now()) * 1000000)::bigint
$$;

ALTER TABLE trades RENAME TO trades_partitioned;
CREATE TABLE trades (LIKE trades_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
SELECT create_hypertable('trades', by_range('ts', 604800000000));
SELECT set_integer_now_func('trades', 'cx_now_us');
ALTER TABLE trades ADD PRIMARY KEY (trade_id, ts);
INSERT INTO trades SELECT * FROM trades_partitioned;
DROP TABLE trades_partitioned;
CREATE INDEX trades_market_ts ON trades (market, ts DESC, trade_id DESC);

ALTER TABLE klines RENAME TO klines_plain;
ALTER INDEX klines_pkey RENAME TO klines_plain_pkey;
CREATE TABLE klines (LIKE klines_plain INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
SELECT create_hypertable('klines', by_range('start', 604800000000));
SELECT set_integer_now_func('klines', 'cx_now_us');
ALTER TABLE klines ADD PRIMARY KEY (market, interval, start);
INSERT INTO klines SELECT * FROM klines_plain;
DROP TABLE klines_plain;

CREATE MATERIALIZED VIEW trade_candles_1m WITH (timescaledb.continuous) AS
SELECT market,
       time_bucket(60000000, ts) AS start,
       first(price, trade_id) AS open,
       max(price) AS high,
       min(price) AS low,
       last(price, trade_id) AS close,
       sum(quantity) AS volume,
       sum(quote_quantity) AS quote_volume,
       count(*) AS trades
FROM trades
GROUP BY market, time_bucket(60000000, ts)
WITH NO DATA;

SELECT add_continuous_aggregate_policy(
    'trade_candles_1m',
    start_offset => 3600000000,  -- refresh the last hour
    end_offset => 60000000,  -- up to the last closed minute
    schedule_interval => interval '1 minute'
);
