-- 0001: the journal and what fences its single writer.
--
-- The journal table is the durable record of every command the engine executed; every read model
-- is a projection of it and can be rebuilt from it. Plain PostgreSQL, so it runs on RDS.

-- The engine lease. An engine holds a PostgreSQL advisory lock while it runs and, on taking it,
-- bumps this epoch in the same transaction: every engine start gets a larger epoch than any
-- before it, which is what lets the persister tell a fenced-out engine's late blocks apart.
CREATE TABLE engine_lease (
    id smallint PRIMARY KEY CHECK (id = 1),
    epoch bigint NOT NULL,
    engine_id text,
    acquired_at timestamptz
);
INSERT INTO engine_lease (id, epoch) VALUES (1, 0);

-- Where the journal stands. The persister locks this one row (FOR UPDATE) for every message, so
-- "is this block the next one, and of the current epoch?" and the write are one atomic step even
-- if two persister invocations overlap. `epoch` is the newest epoch marker written.
CREATE TABLE journal_head (
    id smallint PRIMARY KEY CHECK (id = 1),
    epoch bigint NOT NULL DEFAULT 0,
    last_seq bigint NOT NULL DEFAULT 0,
    last_event_seq bigint NOT NULL DEFAULT 0,
    updated_at timestamptz
);
INSERT INTO journal_head (id) VALUES (1);

-- One row per epoch marker written. The engine waits for its own row before it replays: FIFO
-- order then proves that every block sent before the marker is already in the journal.
CREATE TABLE journal_epochs (
    epoch bigint PRIMARY KEY,
    engine_id text NOT NULL,
    first_seq bigint NOT NULL,  -- journal_head.last_seq + 1 when the marker was written
    sent_at bigint NOT NULL,  -- µs, the engine service's clock
    written_at timestamptz NOT NULL DEFAULT now()
);

-- One row per journal block: records first_seq..last_seq, written only contiguously. The
-- columns are the block's header, for finding and checking blocks without decoding them; `block`
-- keeps the exact bytes the engine sent, so replay decodes what was journaled and nothing else.
CREATE TABLE journal (
    first_seq bigint PRIMARY KEY,
    last_seq bigint NOT NULL,
    epoch bigint NOT NULL,
    first_event_seq bigint NOT NULL,
    last_event_seq bigint NOT NULL,  -- first_event_seq - 1 when the records emitted no event
    state_hash text NOT NULL,  -- the engine's state hash after last_seq, checked on replay
    sent_at bigint NOT NULL,  -- µs, when the engine sealed the block
    written_at timestamptz NOT NULL DEFAULT now(),
    block bytea NOT NULL,  -- the msgpack bytes of the JournalBlock
    CHECK (last_seq >= first_seq),
    CHECK (last_event_seq >= first_event_seq - 1)
);
-- Blocks never overlap, so last_seq is unique too; the index finds the block holding a seq
-- (the first with last_seq >= seq), which is where a replay after a snapshot starts.
CREATE UNIQUE INDEX journal_last_seq ON journal (last_seq);

-- Engine snapshots: a start restores the latest one and replays the journal after `seq`, instead
-- of the whole journal. `state_hash` is checked after the restore.
CREATE TABLE snapshots (
    seq bigint PRIMARY KEY,  -- the journal seq the snapshot is taken after
    epoch bigint NOT NULL,
    event_seq bigint NOT NULL,  -- the engine's last event seq at that point
    state_hash text NOT NULL,
    taken_at bigint NOT NULL,  -- µs
    data bytea NOT NULL
);
