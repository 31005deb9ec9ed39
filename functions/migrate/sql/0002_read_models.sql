-- 0002: the read models, projections of the journal (functions/persister/projection.py and
-- read_models.py).
--
-- Each projection keeps its own checkpoint: the last journal seq it has applied, always the end
-- of a journal block. It applies blocks after it and moves the checkpoint in one transaction, so
-- a redelivered block or a re-run never applies anything twice, and a failure leaves the
-- checkpoint where it was: the next run starts there.
--
-- Amounts are integers as the engine counts them: prices in ticks, quantities in lots (bigint),
-- balances, notionals and fees in asset atoms (numeric: an 18-decimal asset overflows bigint).
-- Times are µs since the epoch (bigint), the engine service's stamp, like the journal's.
--
-- trades, fills and balance_ledger only grow: they are partitioned by month of `ts` (the
-- projection creates a month's partition before its first row; `ensure_month_partition` below),
-- so old months can be detached and archived without touching the rest. orders and klines are
-- updated in place and keyed by id or by (market, interval, start): they are not partitioned.

CREATE TABLE projection_checkpoints (
    name text PRIMARY KEY,
    last_seq bigint NOT NULL DEFAULT 0,  -- the journal seq applied up to (a block's last_seq)
    updated_at timestamptz,
    failures integer NOT NULL DEFAULT 0,  -- consecutive failed runs; 0 when healthy
    last_error text,
    failed_at timestamptz
);
INSERT INTO projection_checkpoints (name)
VALUES ('markets'), ('orders'), ('trades'), ('fills'), ('balance_ledger'), ('klines');

-- Markets as the engine defines them (AddMarket, SetMarketFees, SetMarketState).
CREATE TABLE markets (
    symbol text PRIMARY KEY,
    base text NOT NULL,
    quote text NOT NULL,
    base_decimals integer NOT NULL,
    quote_decimals integer NOT NULL,
    spec jsonb NOT NULL,  -- the MarketSpec, state and fees current
    state text NOT NULL,
    maker_fee_bps integer NOT NULL,
    taker_fee_bps integer NOT NULL,
    added_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    seq bigint NOT NULL  -- the event that last changed the row
);

-- Every accepted order, as it stands now: open, then filled, cancelled or expired.
CREATE TABLE orders (
    order_id bigint PRIMARY KEY,
    account bigint NOT NULL,
    market text NOT NULL,
    client_id bigint,
    side text NOT NULL,
    order_type text NOT NULL,
    time_in_force text NOT NULL,
    price bigint,  -- ticks; null for market orders
    quantity bigint,  -- lots; null for market orders sized in quote
    quote_quantity numeric,  -- quote atoms; market orders sized in quote
    executed_quantity bigint NOT NULL,
    executed_quote_quantity numeric NOT NULL,
    status text NOT NULL,
    close_reason text,
    post_only boolean NOT NULL,
    self_trade_prevention text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    closed_at bigint,
    accepted_seq bigint NOT NULL,
    last_seq bigint NOT NULL
);
-- Order history, newest first, per account and per account and market.
CREATE INDEX orders_account ON orders (account, order_id DESC);
CREATE INDEX orders_account_market ON orders (account, market, order_id DESC);
CREATE INDEX orders_account_client ON orders (account, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX orders_open ON orders (account, market) WHERE closed_at IS NULL;

-- Public trades: one row per fill between a maker and a taker.
CREATE TABLE trades (
    trade_id bigint NOT NULL,
    market text NOT NULL,
    price bigint NOT NULL,
    quantity bigint NOT NULL,
    quote_quantity numeric NOT NULL,
    is_buyer_maker boolean NOT NULL,
    buy_order_id bigint NOT NULL,
    sell_order_id bigint NOT NULL,
    buyer bigint NOT NULL,
    seller bigint NOT NULL,
    buyer_fee numeric NOT NULL,  -- base atoms
    seller_fee numeric NOT NULL,  -- quote atoms
    ts bigint NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (trade_id, ts)
) PARTITION BY RANGE (ts);
-- Newest first per market: each partition's index is walked backwards, newest month first, and
-- the scan stops at the page (an index on trade_id would have to merge every partition).
CREATE INDEX trades_market_ts ON trades (market, ts DESC, trade_id DESC);

-- Fills: each trade as each of its two parties saw it (side, fee, fee asset, maker or taker).
CREATE TABLE fills (
    account bigint NOT NULL,
    trade_id bigint NOT NULL,
    side text NOT NULL,
    order_id bigint NOT NULL,
    market text NOT NULL,
    price bigint NOT NULL,
    quantity bigint NOT NULL,
    quote_quantity numeric NOT NULL,
    fee numeric NOT NULL,
    fee_asset text NOT NULL,
    is_maker boolean NOT NULL,
    ts bigint NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (account, trade_id, side, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX fills_account_ts ON fills (account, ts DESC, trade_id DESC);
CREATE INDEX fills_account_market_ts ON fills (account, market, ts DESC, trade_id DESC);
CREATE INDEX fills_order ON fills (order_id);

-- The balance ledger: every change of every balance, with its reason and reference, in event
-- order. The last row of an (account, asset) is its balance; the deltas add up to it.
CREATE TABLE balance_ledger (
    seq bigint NOT NULL,  -- the BalanceChanged event's sequence number
    account bigint NOT NULL,
    asset text NOT NULL,
    available numeric NOT NULL,  -- after the change
    locked numeric NOT NULL,
    available_delta numeric NOT NULL,
    locked_delta numeric NOT NULL,
    reason text NOT NULL,
    reference text NOT NULL,  -- the order id, or the deposit's or withdrawal's reference
    command_id text NOT NULL,
    ts bigint NOT NULL,
    PRIMARY KEY (seq, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX balance_ledger_account ON balance_ledger (account, asset, seq DESC);

-- Candles of every Backpack interval, from the trades, bucketed by cloudex.klines (the engine's
-- own bucketing for its live candles). Maintained by upsert as trades arrive; a bucket with no
-- trade has no row.
CREATE TABLE klines (
    market text NOT NULL,
    interval text NOT NULL,
    start bigint NOT NULL,  -- µs, the bucket's start
    open bigint NOT NULL,
    high bigint NOT NULL,
    low bigint NOT NULL,
    close bigint NOT NULL,
    volume bigint NOT NULL,  -- lots
    quote_volume numeric NOT NULL,  -- quote atoms
    trades integer NOT NULL,
    first_trade_id bigint NOT NULL,
    last_trade_id bigint NOT NULL,
    PRIMARY KEY (market, interval, start)
);

-- Create the partition of `parent` holding the calendar month (UTC) that contains `ts_us`, if
-- it does not exist yet; return its name. Idempotent and safe to call concurrently. Returns NULL
-- and does nothing when `parent` is not partitioned (the optional Timescale migration turns the
-- tables into hypertables, which make their own chunks).
CREATE FUNCTION ensure_month_partition(parent regclass, ts_us bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', to_timestamp(ts_us / 1000000.0) AT TIME ZONE 'UTC')
                               AT TIME ZONE 'UTC';
    month_end timestamptz := month_start + interval '1 month';
    name text := parent::text || '_' || to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = parent) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(name));
    IF to_regclass(name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%s) TO (%s)',
            name, parent,
            (extract(epoch FROM month_start) * 1000000)::bigint,
            (extract(epoch FROM month_end) * 1000000)::bigint
        );
    END IF;
    RETURN name;
END
$$;
