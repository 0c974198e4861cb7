//! The fleet's tables, as versioned migrations applied on first use.
//!
//! One row per task: its queue entry, current attempt, lease and result change
//! together, in one statement. Every time is the database's `now()`.

/// The migrations, in order; `MIGRATIONS[i]` takes the schema to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[V1, V2];

/// A key for `pg_advisory_xact_lock`: one migrator at a time.
pub const MIGRATION_LOCK: i64 = 0x7275_6e77_6172_6501;

const V1: &str = r#"
CREATE TABLE runware_fleet_batches (
    id             uuid PRIMARY KEY,
    name           text NOT NULL,
    endpoint       text NOT NULL,
    options        jsonb NOT NULL DEFAULT '{}',
    state          text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused', 'cancelled')),
    paused_reason  text,
    paused_at      timestamptz,
    max_in_flight  integer NOT NULL CHECK (max_in_flight > 0),
    max_attempts   integer NOT NULL CHECK (max_attempts > 0),
    max_deliveries integer NOT NULL CHECK (max_deliveries > 0),
    max_cost       double precision,
    backoff_until  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE runware_fleet_tasks (
    batch_id      uuid NOT NULL REFERENCES runware_fleet_batches (id) ON DELETE CASCADE,
    line_key      text NOT NULL,
    line_no       integer NOT NULL,
    request       jsonb NOT NULL,
    wanted        integer NOT NULL,
    attempt       integer NOT NULL DEFAULT 1,
    retry_base    integer NOT NULL DEFAULT 0,
    task_uuid     uuid NOT NULL,
    state         text NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'leased', 'done', 'failed', 'dead', 'parked', 'paused')),
    lease_owner   uuid,
    leased_at     timestamptz,
    deliveries    integer NOT NULL DEFAULT 0,
    first_sent_at timestamptz,
    not_before    timestamptz,
    images        jsonb NOT NULL DEFAULT '[]',
    results       jsonb NOT NULL DEFAULT '[]',
    error         jsonb,
    cost          double precision NOT NULL DEFAULT 0,
    latency_ms    double precision,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, line_key)
);
CREATE INDEX runware_fleet_tasks_queued ON runware_fleet_tasks (batch_id, line_no) WHERE state = 'queued';
CREATE INDEX runware_fleet_tasks_leased ON runware_fleet_tasks (lease_owner) WHERE state = 'leased';
CREATE UNIQUE INDEX runware_fleet_tasks_uuid ON runware_fleet_tasks (task_uuid);

CREATE TABLE runware_fleet_workers (
    id         uuid PRIMARY KEY,
    host       text NOT NULL,
    pid        integer NOT NULL,
    endpoint   text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    stopped_at timestamptz
);
"#;

/// The references `batch submit` uploaded, kept so a worker can upload one again
/// when the server has forgotten it (`fleet/references.rs`).
const V2: &str = r#"
CREATE TABLE runware_fleet_references (
    batch_id   uuid NOT NULL REFERENCES runware_fleet_batches (id) ON DELETE CASCADE,
    original   uuid NOT NULL,
    current    uuid NOT NULL,
    data       text NOT NULL,
    renewed_at timestamptz,
    PRIMARY KEY (batch_id, original)
);
"#;
