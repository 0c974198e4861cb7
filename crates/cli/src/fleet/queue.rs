//! Every statement the fleet runs, by name, grouped by who runs it (the schema's
//! migrations themselves are in `schema.rs`).
//!
//! Each statement's doc says its parameters, which rows it changes and the state
//! change it makes. Tasks move between the [`TaskState`]s, batches between the
//! [`BatchState`]s; all times are the database's `now()`.
//!
//! **States in the text.** A state a statement always names is written in its text
//! as an SQL literal (`WHERE state = 'queued'`), not bound as a parameter: the
//! planner uses the partial indexes `runware_fleet_tasks_queued` and
//! `runware_fleet_tasks_leased` only for a predicate it can prove from the text,
//! and the worker's statements are prepared once per connection, where after a few
//! runs PostgreSQL may switch to a generic plan that cannot prove it from a
//! parameter. So the literals stay, and the tests below parse every statement and
//! check each state literal against the enums: the task's or the batch's, by the
//! table the compared column belongs to (`b.state` is a batch's, `t.state` a
//! task's, a bare `state` the updated table's or the only one read). A literal
//! that is not a state must be one of a short list of known others (JSON keys,
//! messages, an interval, a `LIKE` pattern), so a misspelt state cannot pass as
//! one. A state that varies with the call (`failed` or `done`, `active` or
//! `cancelled`, each inserted row's) is a parameter, bound from the enum.
//!
//! The statements are `static`s, not `const`s: `Conn::prepared` (db.rs)
//! caches a prepared statement by the address of its text, and a `static` has one
//! address where a `const` is copied into each use.
//!
//! [`TaskState`]: super::states::TaskState
//! [`BatchState`]: super::states::BatchState

/// Declares a group's statements: each a documented `static` (a statement without
/// a doc comment does not compile), and, for the tests, the list of them by name.
macro_rules! statements {
    ($( $(#[doc = $doc:literal])+ $name:ident = $sql:literal; )+) => {
        $( $(#[doc = $doc])+ pub static $name: &str = $sql; )+

        /// Every statement of the group, with its name.
        #[cfg(test)]
        pub fn all() -> Vec<(&'static str, &'static str)> {
            vec![$( (stringify!($name), $name) ),+]
        }
    };
}

/// `runware worker` (`worker.rs`).
pub mod worker_sql {
    statements! {
        /// Registers a worker: inserts its `runware_fleet_workers` row ($1 id, $2 host,
        /// $3 pid, $4 endpoint). No state changes.
        REGISTER = "INSERT INTO runware_fleet_workers (id, host, pid, endpoint) VALUES ($1, $2, $3, $4)";

        /// A key was refused or the account cannot pay: every batch of endpoint $1
        /// `active` → `paused`, with reason $2 (`auth: …` for a refused key).
        PAUSE_ENDPOINT = "UPDATE runware_fleet_batches SET state = 'paused', paused_reason = $2, paused_at = now()
             WHERE endpoint = $1 AND state = 'active'";

        /// A worker's key works: every batch of endpoint $1 paused for a refused key
        /// (reason `auth:…`) `paused` → `active`, reason cleared. Batches paused for
        /// another reason stay `paused`.
        RESUME_AFTER_AUTH = "UPDATE runware_fleet_batches SET state = 'active', paused_reason = NULL, paused_at = NULL
         WHERE endpoint = $1 AND state = 'paused' AND paused_reason LIKE 'auth:%'";

        /// The claim: `queued` → `leased` (to worker $2) for up to $3 tasks of one
        /// batch — the oldest `active` batch of endpoint $1 that is past its rate-limit
        /// backoff, under its cost cap, under its in-flight cap and has a task due
        /// (`not_before` passed) — in line order, never more than the cap leaves room
        /// for. Counts a delivery on each and sets `first_sent_at` the first time. The
        /// batch row is locked (`FOR UPDATE SKIP LOCKED`) so the cap holds fleet-wide;
        /// tasks other claims hold are skipped. Returns the claimed tasks.
        CLAIM = "WITH b AS (
                SELECT b.id, b.max_in_flight FROM runware_fleet_batches b
                WHERE b.state = 'active' AND b.endpoint = $1
                  AND (b.backoff_until IS NULL OR b.backoff_until <= now())
                  AND (b.max_cost IS NULL
                       OR (SELECT COALESCE(sum(s.cost), 0) FROM runware_fleet_tasks s WHERE s.batch_id = b.id) < b.max_cost)
                  AND (SELECT count(*) FROM runware_fleet_tasks l WHERE l.batch_id = b.id AND l.state = 'leased') < b.max_in_flight
                  AND EXISTS (SELECT 1 FROM runware_fleet_tasks q WHERE q.batch_id = b.id AND q.state = 'queued'
                              AND (q.not_before IS NULL OR q.not_before <= now()))
                ORDER BY b.created_at, b.id
                LIMIT 1
                FOR UPDATE SKIP LOCKED
             ), room AS (
                SELECT b.id, (b.max_in_flight - (SELECT count(*) FROM runware_fleet_tasks l
                              WHERE l.batch_id = b.id AND l.state = 'leased'))::int AS n FROM b
             ), c AS (
                SELECT t.batch_id, t.line_key FROM runware_fleet_tasks t JOIN room ON t.batch_id = room.id
                WHERE t.state = 'queued' AND (t.not_before IS NULL OR t.not_before <= now())
                ORDER BY t.line_no
                LIMIT LEAST($3::int, (SELECT GREATEST(n, 0) FROM room))
                FOR UPDATE OF t SKIP LOCKED
             )
             UPDATE runware_fleet_tasks t
             SET state = 'leased', lease_owner = $2, leased_at = now(), deliveries = t.deliveries + 1,
                 first_sent_at = COALESCE(t.first_sent_at, now()), updated_at = now()
             FROM c WHERE t.batch_id = c.batch_id AND t.line_key = c.line_key
             RETURNING t.batch_id, t.line_key, t.line_no, t.request, t.wanted, t.attempt, t.task_uuid, t.images, t.error";

        /// Reads whether the work is over: true when no `active` batch of endpoint $1
        /// has a task `queued` or `leased` (`--exit-when-idle`). Changes nothing.
        NOTHING_LEFT = "SELECT NOT EXISTS (SELECT 1 FROM runware_fleet_tasks t JOIN runware_fleet_batches b ON b.id = t.batch_id
                                WHERE b.endpoint = $1 AND b.state = 'active' AND t.state IN ('queued', 'leased'))";

        /// The heartbeat: worker $1's `last_seen` = now. No state changes.
        HEARTBEAT = "UPDATE runware_fleet_workers SET last_seen = now() WHERE id = $1";

        /// The sweeper: every task `leased` by another worker than $1 that was last
        /// seen more than $2 seconds ago → `queued` (same attempt and taskUUID: the next
        /// delivery recovers its outcome), or → `dead` with the error
        /// `deliveredTooOften` once it was handed out the batch's `max_deliveries`
        /// times. The lease is cleared either way.
        SWEEP = "UPDATE runware_fleet_tasks t
                     SET state = CASE WHEN t.deliveries >= b.max_deliveries THEN 'dead' ELSE 'queued' END,
                         error = CASE WHEN t.deliveries >= b.max_deliveries THEN jsonb_build_object(
                                     'code', 'deliveredTooOften',
                                     'message', 'handed out ' || t.deliveries || ' times without an outcome; last: '
                                                || COALESCE(t.error->>'message', 'its worker went silent'))
                                 ELSE t.error END,
                         lease_owner = NULL, updated_at = now()
                     FROM runware_fleet_batches b, runware_fleet_workers w
                     WHERE t.batch_id = b.id AND t.state = 'leased' AND w.id = t.lease_owner AND w.id <> $1
                       AND w.last_seen < now() - make_interval(secs => $2)";

        /// A success: the task (batch $1, line $2) still at attempt $3 and `queued`,
        /// `leased`, `dead` or `paused` → `done`, with images $4, other results $5,
        /// cost $6 and latency $7 ms; error and lease cleared, `finished_at` set. A
        /// compare-and-set on the attempt: a row that moved to another attempt or is
        /// already `done`, `failed` or `parked` is not changed (the first completion
        /// wins).
        RECORD_DONE = "UPDATE runware_fleet_tasks
                         SET state = 'done', images = $4, results = $5, cost = $6, latency_ms = $7, error = NULL,
                             lease_owner = NULL, finished_at = now(), updated_at = now()
                         WHERE batch_id = $1 AND line_key = $2 AND attempt = $3
                           AND state IN ('queued', 'leased', 'dead', 'paused')";

        /// An end without success: the task (batch $1, line $2) still at attempt $3
        /// and `queued`, `leased`, `dead` or `paused` → state $4 (`failed` when refused
        /// for good, `done` when a retryable failure came after all its images), with
        /// error $5, images $6 and cost $7; lease cleared, `finished_at` set. The same
        /// compare-and-set as [`RECORD_DONE`].
        RECORD_END = "UPDATE runware_fleet_tasks
                 SET state = $4, error = $5, images = $6, cost = $7, lease_owner = NULL, finished_at = now(), updated_at = now()
                 WHERE batch_id = $1 AND line_key = $2 AND attempt = $3 AND state IN ('queued', 'leased', 'dead', 'paused')";

        /// A failure the server reported: the task (batch $1, line $2) still at attempt
        /// $3 and `queued`, `leased`, `dead` or `paused` → attempt $4 under the new
        /// taskUUID $5, `queued` again after $9 seconds (`not_before`), or → `parked`
        /// (with `finished_at`) when $4 is past the batch's `max_attempts` since its
        /// last `batch retry --parked`. Records error $6, images $7 and cost $8; lease
        /// cleared. A compare-and-set on the attempt: only one failure advances it.
        ADVANCE = "UPDATE runware_fleet_tasks t
                 SET attempt = $4, task_uuid = $5, error = $6, images = $7, cost = $8, lease_owner = NULL,
                     state = CASE WHEN $4 - t.retry_base > b.max_attempts THEN 'parked' ELSE 'queued' END,
                     finished_at = CASE WHEN $4 - t.retry_base > b.max_attempts THEN now() END,
                     not_before = now() + make_interval(secs => $9), updated_at = now()
                 FROM runware_fleet_batches b
                 WHERE b.id = t.batch_id AND t.batch_id = $1 AND t.line_key = $2 AND t.attempt = $3
                   AND t.state IN ('queued', 'leased', 'dead', 'paused')";

        /// An unknown outcome (or one to send again): the task (batch $1, line $2,
        /// attempt $3) `leased` by worker $4 → `queued` under the same taskUUID, its
        /// delivery given back when $5 is 1; → `dead` instead once it was handed out
        /// the batch's `max_deliveries` times (error $6 plus `deliveredTooOften`).
        /// Records error $6, images $7 and cost $8; lease cleared.
        RELEASE = "UPDATE runware_fleet_tasks t
                 SET deliveries = t.deliveries - $5,
                     state = CASE WHEN t.deliveries - $5 >= b.max_deliveries THEN 'dead' ELSE 'queued' END,
                     error = CASE WHEN t.deliveries - $5 >= b.max_deliveries
                                  THEN $6::jsonb || jsonb_build_object('code', 'deliveredTooOften', 'message',
                                       'handed out ' || t.deliveries || ' times without an outcome; last: ' || ($6::jsonb->>'message'))
                                  ELSE $6::jsonb END,
                     images = $7, cost = $8, lease_owner = NULL, updated_at = now()
                 FROM runware_fleet_batches b
                 WHERE b.id = t.batch_id AND t.batch_id = $1 AND t.line_key = $2 AND t.attempt = $3
                   AND t.state = 'leased' AND t.lease_owner = $4";

        /// The fallback when an outcome could not be recorded: the task (batch $1,
        /// line $2, attempt $3) `leased` by worker $4 → `queued`, lease cleared,
        /// nothing recorded (the delivery stays counted).
        ABANDON = "UPDATE runware_fleet_tasks SET state = 'queued', lease_owner = NULL, updated_at = now()
         WHERE batch_id = $1 AND line_key = $2 AND attempt = $3 AND state = 'leased' AND lease_owner = $4";

        /// A rate limit: batch $1 is not claimed from for $2 seconds more (its
        /// `backoff_until` only moves later). No state changes.
        BACK_OFF = "UPDATE runware_fleet_batches SET backoff_until = GREATEST(COALESCE(backoff_until, now()), now() + make_interval(secs => $2))
             WHERE id = $1";

        /// A worker stopping: every task `leased` by worker $1 → `queued`, lease cleared,
        /// its delivery given back (not counted).
        RELEASE_ALL = "UPDATE runware_fleet_tasks SET state = 'queued', lease_owner = NULL,
                     deliveries = GREATEST(deliveries - 1, 0), updated_at = now()
                 WHERE lease_owner = $1 AND state = 'leased'";

        /// A worker stopped: worker $1's `stopped_at` = now. No state changes.
        MARK_STOPPED = "UPDATE runware_fleet_workers SET stopped_at = now() WHERE id = $1";
    }
}

/// `runware batch status|results|retry|cancel|resume|list` (`admin.rs`).
pub mod admin_sql {
    statements! {
        /// Reads batch $1's name, state, pause reason and endpoint. Changes nothing.
        READ_BATCH = "SELECT name, state, paused_reason, endpoint FROM runware_fleet_batches WHERE id = $1";

        /// Reads the number of batch $1's tasks in each state. Changes nothing.
        COUNT_BY_STATE = "SELECT state, count(*) FROM runware_fleet_tasks WHERE batch_id = $1 GROUP BY state";

        /// Reads batch $1's billed cost, image count and tasks `done` in the last
        /// minute. Changes nothing.
        SUMS = "SELECT COALESCE(sum(cost), 0), COALESCE(sum(jsonb_array_length(images)), 0)::bigint,
                    count(*) FILTER (WHERE state = 'done' AND finished_at > now() - interval '1 minute')
             FROM runware_fleet_tasks WHERE batch_id = $1";

        /// Reads the number of workers of endpoint $1 running and seen in the last
        /// minute. Changes nothing.
        LIVE_WORKERS = "SELECT count(*) FROM runware_fleet_workers
             WHERE endpoint = $1 AND stopped_at IS NULL AND last_seen > now() - interval '1 minute'";

        /// Reads whether batch $1 exists (a row when it does). Changes nothing.
        BATCH_EXISTS = "SELECT 1 FROM runware_fleet_batches WHERE id = $1";

        /// Reads batch $1's finished tasks (`done`, `failed`, `parked`, `dead`) with
        /// their outcomes, in line order. Changes nothing.
        RESULTS = "SELECT line_key, line_no, task_uuid, state, attempt, images, results, error, latency_ms
             FROM runware_fleet_tasks WHERE batch_id = $1 AND state IN ('done', 'failed', 'parked', 'dead')
             ORDER BY line_no";

        /// `batch retry --dead`: every task of batch $1 `dead` → `queued` under the
        /// same attempt and taskUUID (it may have run: the server's conflict →
        /// `getResponse` recovers it); its deliveries counted afresh, `not_before`,
        /// `finished_at` and lease cleared.
        REQUEUE_DEAD = "UPDATE runware_fleet_tasks
                 SET state = 'queued', deliveries = 0, not_before = NULL, finished_at = NULL, lease_owner = NULL,
                     updated_at = now()
                 WHERE batch_id = $1 AND state = 'dead'";

        /// Reads the line and attempt of each of batch $1's `parked` tasks. Changes
        /// nothing.
        FIND_PARKED = "SELECT line_key, attempt FROM runware_fleet_tasks WHERE batch_id = $1 AND state = 'parked'";

        /// `batch retry --parked`, one task: the task (batch $1, line $2) still at
        /// attempt $3 and `parked` → `queued` at attempt $3 + 1 under the new taskUUID
        /// $4, with its retries counted from there (`retry_base`) and its deliveries
        /// afresh; `not_before`, `finished_at` and lease cleared.
        REQUEUE_PARKED = "UPDATE runware_fleet_tasks
                     SET attempt = $3 + 1, retry_base = $3, task_uuid = $4, state = 'queued', deliveries = 0,
                         not_before = NULL, finished_at = NULL, lease_owner = NULL, updated_at = now()
                     WHERE batch_id = $1 AND line_key = $2 AND attempt = $3 AND state = 'parked'";

        /// `batch cancel|resume`: batch $1, unless `cancelled`, → state $2 (`cancelled`
        /// or `active`), pause reason cleared. A cancelled batch stays cancelled.
        SET_BATCH_STATE = "UPDATE runware_fleet_batches SET state = $2, paused_reason = NULL, paused_at = NULL
             WHERE id = $1 AND state <> 'cancelled'";

        /// Reads batch $1's state. Changes nothing.
        BATCH_STATE = "SELECT state FROM runware_fleet_batches WHERE id = $1";

        /// Reads every batch's id, oldest first. Changes nothing.
        LIST_BATCHES = "SELECT id FROM runware_fleet_batches ORDER BY created_at, id";
    }
}

/// `runware batch submit` (`submit.rs`).
pub mod submit_sql {
    statements! {
        /// Reads the line identities batch $1 already has. Changes nothing.
        QUEUED_LINES = "SELECT line_key FROM runware_fleet_tasks WHERE batch_id = $1";

        /// Creates batch $1 (name $2, endpoint $3, options $4; `active`, the schema's
        /// default) with its caps: in flight $5, attempts $6, deliveries $7, cost $8.
        /// Submitted again, only the caps change (the state is left as it is).
        CREATE_BATCH = "INSERT INTO runware_fleet_batches (id, name, endpoint, options, max_in_flight, max_attempts, max_deliveries, max_cost)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET max_in_flight = EXCLUDED.max_in_flight, max_attempts = EXCLUDED.max_attempts,
             max_deliveries = EXCLUDED.max_deliveries, max_cost = EXCLUDED.max_cost";

        /// Inserts batch $1's new lines, one row per element of the arrays: line
        /// identity $2, line number $3, request $4, images wanted $5, taskUUID $6,
        /// state $7 (`queued`, or `failed` for a line that breaks a rule, then with
        /// error $8 and `finished_at`). A line already there is left as it is.
        INSERT_TASKS = "INSERT INTO runware_fleet_tasks (batch_id, line_key, line_no, request, wanted, task_uuid, state, error, finished_at)
         SELECT $1, k, l, r, w, u, s, e, CASE WHEN s = 'failed' THEN now() END
         FROM unnest($2::text[], $3::int[], $4::jsonb[], $5::int[], $6::uuid[], $7::text[], $8::jsonb[]) AS x(k, l, r, w, u, s, e)
         ON CONFLICT (batch_id, line_key) DO NOTHING";

        /// Withdraws the lines no longer in the file: deletes batch $1's tasks not in
        /// $2 that are `queued` and were never handed out (a task ever sent may have
        /// run: it stays).
        WITHDRAW = "DELETE FROM runware_fleet_tasks
             WHERE batch_id = $1 AND state = 'queued' AND first_sent_at IS NULL AND deliveries = 0
               AND NOT (line_key = ANY($2::text[]))";

        /// Renumbers batch $1's lines that moved in the file: line identity $2[i] gets
        /// line number $3[i]. No state changes.
        RENUMBER = "UPDATE runware_fleet_tasks t SET line_no = x.l, updated_at = now()
         FROM unnest($2::text[], $3::int[]) AS x(k, l)
         WHERE t.batch_id = $1 AND t.line_key = x.k AND t.line_no <> x.l";
    }
}

/// The references `batch submit` uploaded and workers upload again (`references.rs`).
pub mod references_sql {
    statements! {
        /// `batch submit`: keeps batch $1's uploads, imageUUID $2[i] with its reference
        /// $3[i] (current = original); one already kept is left as it is.
        KEEP = "INSERT INTO runware_fleet_references (batch_id, original, current, data)
         SELECT $1, u, u, d FROM unnest($2::uuid[], $3::text[]) AS x(u, d)
         ON CONFLICT (batch_id, original) DO NOTHING";

        /// Reads every reference uploaded again since (original → current). Changes
        /// nothing.
        LOAD_RENEWED = "SELECT original, current FROM runware_fleet_references WHERE original <> current";

        /// Reads the current upload of batch $1's references $2. Changes nothing.
        LEARN = "SELECT original, current FROM runware_fleet_references WHERE batch_id = $1 AND original = ANY($2)";

        /// Reads batch $1's references $2 with their current upload and their data.
        /// Changes nothing.
        READ_KEPT = "SELECT original, current, data FROM runware_fleet_references WHERE batch_id = $1 AND original = ANY($2)";

        /// Records a new upload: batch $1's reference $2 → current $4, if its current
        /// upload is still $3 (a compare-and-set: the first worker wins; returns a row
        /// when this one did).
        RECORD_RENEWAL = "UPDATE runware_fleet_references SET current = $4, renewed_at = now()
                         WHERE batch_id = $1 AND original = $2 AND current = $3 RETURNING current";

        /// Reads batch $1's reference $2's current upload. Changes nothing.
        READ_CURRENT = "SELECT current FROM runware_fleet_references WHERE batch_id = $1 AND original = $2";
    }
}

/// Applying the migrations of `schema.rs` (`db.rs`), in one transaction.
pub mod migration_sql {
    statements! {
        /// Takes the migration lock $1 for the transaction (one migrator at a time).
        LOCK = "SELECT pg_advisory_xact_lock($1)";

        /// Creates the table of applied schema versions, if there is none.
        CREATE_VERSIONS = "CREATE TABLE IF NOT EXISTS runware_fleet_schema (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now())";

        /// Reads the schema's version (0 when none was applied). Changes nothing.
        READ_VERSION = "SELECT COALESCE(max(version), 0) FROM runware_fleet_schema";

        /// Records that version $1 was applied.
        RECORD_VERSION = "INSERT INTO runware_fleet_schema (version) VALUES ($1)";
    }
}

#[cfg(test)]
mod tests {
    use super::super::states::{BatchState, TaskState};
    use std::collections::{BTreeMap, BTreeSet};

    /// The literals that are not states, where statements use them.
    const NOT_STATES: &[&str] = &[
        // JSON keys and the message of a task handed out too often.
        "code",
        "message",
        "deliveredTooOften",
        "handed out ",
        " times without an outcome; last: ",
        "its worker went silent",
        // `interval '1 minute'`
        "1 minute",
        // The pause reason of a refused key.
        "auth:%",
    ];

    fn every_statement() -> Vec<(&'static str, &'static str)> {
        [
            super::worker_sql::all(),
            super::admin_sql::all(),
            super::submit_sql::all(),
            super::references_sql::all(),
            super::migration_sql::all(),
        ]
        .concat()
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Token<'a> {
        /// An identifier, possibly qualified (`b.state`), or a keyword.
        Word(&'a str),
        /// A string literal's content.
        Literal(String),
        /// `$1`.
        Param,
        /// Anything else, one character (`=`, `(`) or an operator (`<>`, `->>`).
        Punct(&'a str),
    }

    fn tokens(sql: &str) -> Vec<Token<'_>> {
        let bytes = sql.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_whitespace() {
                i += 1;
            } else if b == b'\'' {
                let mut text = String::new();
                i += 1;
                loop {
                    assert!(i < bytes.len(), "an unterminated literal in {sql}");
                    if bytes[i] == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            text.push('\'');
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    let c = sql[i..].chars().next().unwrap();
                    text.push(c);
                    i += c.len_utf8();
                }
                out.push(Token::Literal(text));
            } else if b.is_ascii_alphabetic() || b == b'_' {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.') {
                    i += 1;
                }
                out.push(Token::Word(&sql[start..i]));
            } else if b == b'$' {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                out.push(Token::Param);
            } else if b.is_ascii_digit() {
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            } else {
                let start = i;
                let ops = ["<>", "<=", ">=", "->>", "->", "||", "::"];
                let op = ops.iter().find(|op| sql[i..].starts_with(**op));
                i += op.map_or(1, |op| op.len());
                out.push(Token::Punct(&sql[start..i]));
            }
        }
        out
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Table {
        Tasks,
        Batches,
    }

    fn table(word: &str) -> Option<Table> {
        match word {
            "runware_fleet_tasks" => Some(Table::Tasks),
            "runware_fleet_batches" => Some(Table::Batches),
            _ => None,
        }
    }

    fn keyword(tok: &Token<'_>, kw: &str) -> bool {
        matches!(tok, Token::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    const KEYWORDS: &[&str] = &["WHERE", "SET", "GROUP", "ORDER", "JOIN", "ON", "LIMIT", "RETURNING", "FOR", "AS"];

    /// The state literals of one statement, by the table whose state they are; and
    /// the literals that are not in a state's place.
    fn state_literals(sql: &str) -> (Vec<(Table, String)>, Vec<String>) {
        let t = tokens(sql);
        // Aliases (`runware_fleet_tasks t`) and the tables read.
        let mut aliases = BTreeMap::new();
        let mut read = BTreeSet::new();
        for w in t.windows(2) {
            if let Token::Word(name) = &w[0]
                && let Some(tb) = table(name)
            {
                read.insert(tb);
                if let Token::Word(alias) = &w[1]
                    && !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(alias))
                {
                    aliases.insert(alias.to_string(), tb);
                }
            }
        }
        // `UPDATE runware_fleet_tasks`, not `FOR UPDATE` (a CTE may come first).
        let updated = t.windows(2).find_map(|w| match &w[1] {
            Token::Word(name) if keyword(&w[0], "UPDATE") => table(name),
            _ => None,
        });
        let bare = updated.or_else(|| if read.len() == 1 { read.first().copied() } else { None });
        let mut states = Vec::new();
        let mut used = vec![false; t.len()];
        for (i, tok) in t.iter().enumerate() {
            let Token::Word(w) = tok else { continue };
            let of = match w.split_once('.') {
                Some((alias, "state")) => {
                    Some(*aliases.get(alias).unwrap_or_else(|| panic!("{w}: no table with alias {alias} in {sql}")))
                }
                None if *w == "state" => bare,
                _ => continue,
            };
            let mut j = i + 1;
            let literal_at = |j: usize| matches!(t.get(j), Some(Token::Literal(_)));
            let mut found = Vec::new();
            match t.get(j) {
                Some(Token::Punct("=" | "<>")) => {
                    j += 1;
                    if literal_at(j) {
                        found.push(j);
                    } else if t.get(j).is_some_and(|tok| keyword(tok, "CASE")) {
                        // The literals each branch sets.
                        let mut depth = 0;
                        for (k, tok) in t.iter().enumerate().skip(j) {
                            if keyword(tok, "CASE") {
                                depth += 1;
                            } else if keyword(tok, "END") {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            } else if (keyword(tok, "THEN") || keyword(tok, "ELSE")) && literal_at(k + 1) {
                                found.push(k + 1);
                            }
                        }
                    }
                }
                Some(tok) if keyword(tok, "IN") => {
                    assert_eq!(t.get(j + 1), Some(&Token::Punct("(")), "{sql}");
                    j += 2;
                    while let Some(tok) = t.get(j) {
                        match tok {
                            Token::Literal(_) => found.push(j),
                            Token::Punct(",") => {}
                            Token::Punct(")") => break,
                            other => panic!("{other:?} in a list of states in {sql}"),
                        }
                        j += 1;
                    }
                }
                _ => {}
            }
            if found.is_empty() {
                continue;
            }
            let of = of.unwrap_or_else(|| panic!("whose state is `{w}` in {sql}?"));
            for k in found {
                let Token::Literal(l) = &t[k] else { unreachable!() };
                used[k] = true;
                states.push((of, l.clone()));
            }
        }
        let others = t
            .iter()
            .zip(used)
            .filter_map(|(tok, used)| match tok {
                Token::Literal(l) if !used => Some(l.clone()),
                _ => None,
            })
            .collect();
        (states, others)
    }

    #[test]
    fn every_state_literal_is_a_state_of_its_table() {
        let mut seen = BTreeSet::new();
        for (name, sql) in every_statement() {
            let (states, others) = state_literals(sql);
            for (table, s) in states {
                match table {
                    Table::Tasks => assert!(s.parse::<TaskState>().is_ok(), "{name}: '{s}' is not a task state"),
                    Table::Batches => assert!(s.parse::<BatchState>().is_ok(), "{name}: '{s}' is not a batch state"),
                }
                seen.insert((name, table, s));
            }
            for l in others {
                // `CASE WHEN s = 'failed'` in INSERT_TASKS compares an inserted row's state.
                assert!(
                    NOT_STATES.contains(&l.as_str()) || l.parse::<TaskState>().is_ok(),
                    "{name}: '{l}' is neither a state nor a known other literal"
                );
            }
        }
        // The checker sees the states where they are.
        for (name, table, s) in [
            ("CLAIM", Table::Batches, "active"),
            ("CLAIM", Table::Tasks, "queued"),
            ("CLAIM", Table::Tasks, "leased"),
            ("NOTHING_LEFT", Table::Tasks, "leased"),
            ("SWEEP", Table::Tasks, "dead"),
            ("ADVANCE", Table::Tasks, "parked"),
            ("ADVANCE", Table::Tasks, "paused"),
            ("RELEASE", Table::Tasks, "dead"),
            ("PAUSE_ENDPOINT", Table::Batches, "paused"),
            ("SET_BATCH_STATE", Table::Batches, "cancelled"),
            ("SUMS", Table::Tasks, "done"),
            ("WITHDRAW", Table::Tasks, "queued"),
        ] {
            assert!(seen.contains(&(name, table, s.to_string())), "{name}: {table:?} '{s}' not seen");
        }
    }

    #[test]
    fn the_checker_catches_a_wrong_state() {
        let (states, others) = state_literals(
            "UPDATE runware_fleet_tasks t SET state = CASE WHEN x THEN 'dead' ELSE 'queud' END
             FROM runware_fleet_batches b WHERE b.state <> 'leased' AND t.state IN ('done', 'parked') AND y = 'z'",
        );
        assert_eq!(
            states,
            [
                (Table::Tasks, "dead".to_string()),
                (Table::Tasks, "queud".to_string()),
                (Table::Batches, "leased".to_string()),
                (Table::Tasks, "done".to_string()),
                (Table::Tasks, "parked".to_string()),
            ]
        );
        assert_eq!(others, ["z"]);
        let (states, _) = state_literals(
            "WITH c AS (SELECT 1 FROM runware_fleet_batches b WHERE b.state = 'active' FOR UPDATE SKIP LOCKED)
             UPDATE runware_fleet_tasks t SET state = 'leased' FROM c",
        );
        assert_eq!(states, [(Table::Batches, "active".to_string()), (Table::Tasks, "leased".to_string())]);
        assert!("queud".parse::<TaskState>().is_err());
        assert!("leased".parse::<BatchState>().is_err());
    }

    #[test]
    fn statements_have_distinct_names_and_texts() {
        let all = every_statement();
        let names: BTreeSet<_> = all.iter().map(|(n, _)| *n).collect();
        let texts: BTreeSet<_> = all.iter().map(|(_, s)| *s).collect();
        assert_eq!(names.len(), all.len(), "two statements share a name");
        assert_eq!(texts.len(), all.len(), "two statements share a text");
    }
}
