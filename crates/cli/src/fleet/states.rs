//! The states of a task and of a batch: exactly what the schema's `CHECK`
//! constraints allow (a test below reads them from the migrations).
//!
//! They are bound to statements and read from rows as these enums (as `text`,
//! through [`ToSql`] and [`FromSql`]): a state the schema does not know cannot be
//! written from Rust, and one read from the database that this build does not know
//! is an error, not a string passed along. The states a statement names as SQL
//! literals are checked against these enums by the tests of the queue module (queue.rs).

use bytes::BytesMut;
use std::error::Error;
use std::fmt;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

/// A state this build does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} state {found:?}")]
pub struct UnknownState {
    /// "task" or "batch".
    what: &'static str,
    /// What was given.
    found: String,
}

/// Declares a state enum: its variants with their spelling in the schema, `ALL`,
/// `as_str`, `FromStr`, `Display`, and `ToSql`/`FromSql` as text.
macro_rules! states {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[doc = $doc:literal])+ $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl $name {
            /// Every state, in the order `batch status` shows them.
            #[cfg_attr(not(test), allow(dead_code))]
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// As the schema spells it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<$name, UnknownState> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(UnknownState { what: $what, found: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }
            fn accepts(ty: &Type) -> bool {
                <&str as ToSql>::accepts(ty)
            }
            to_sql_checked!();
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<$name, Box<dyn Error + Sync + Send>> {
                Ok(<&str as FromSql>::from_sql(ty, raw)?.parse()?)
            }
            fn accepts(ty: &Type) -> bool {
                <&str as FromSql>::accepts(ty)
            }
        }
    };
}

states! {
    /// The state of a task (`runware_fleet_tasks.state`).
    pub enum TaskState ("task") {
        /// Waiting to be claimed (from `not_before` on, when set).
        Queued = "queued",
        /// Claimed by a worker (`lease_owner`), in flight.
        Leased = "leased",
        /// Finished with its images (or with a retryable failure after all of them came).
        Done = "done",
        /// Refused for good (invalid line, or a failure no new attempt can fix).
        Failed = "failed",
        /// Its retries are used up; `batch retry --parked` starts a new attempt.
        Parked = "parked",
        /// Handed out `max_deliveries` times without an outcome; `batch retry --dead`
        /// resends it under its own taskUUID.
        Dead = "dead",
        /// Allowed by the schema and counted as open by `batch status`; no statement
        /// of this build moves a task to it (a paused batch pauses its tasks by not
        /// being claimed from).
        Paused = "paused",
    }
}

states! {
    /// The state of a batch (`runware_fleet_batches.state`).
    pub enum BatchState ("batch") {
        /// Its tasks are claimed.
        Active = "active",
        /// Not claimed from (a refused key, an exhausted account); `paused_reason` says why.
        Paused = "paused",
        /// Cancelled for good: never claimed from, cannot be resumed.
        Cancelled = "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::schema::MIGRATIONS;
    use std::collections::BTreeSet;

    /// The states the migrations' `CHECK (state IN (...))` allows in `table`.
    fn checked_states(table: &str) -> BTreeSet<String> {
        let all = MIGRATIONS.concat();
        let start = all.find(&format!("CREATE TABLE {table} (")).unwrap_or_else(|| panic!("no table {table}"));
        let body = &all[start..];
        let body = &body[..body.find(");").expect("the table's definition ends")];
        let check = "CHECK (state IN (";
        let at = body.find(check).unwrap_or_else(|| panic!("{table}: no CHECK on its state")) + check.len();
        let list = &body[at..at + body[at..].find(')').expect("the list ends")];
        list.split(',').map(|s| s.trim().trim_matches('\'').to_string()).collect()
    }

    #[test]
    fn task_states_round_trip_and_are_the_schemas() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), *s);
            assert_eq!(s.to_string(), s.as_str());
        }
        let ours: BTreeSet<String> = TaskState::ALL.iter().map(|s| s.as_str().to_string()).collect();
        assert_eq!(ours.len(), TaskState::ALL.len());
        assert_eq!(ours, checked_states("runware_fleet_tasks"));
        assert!("cancelled".parse::<TaskState>().is_err());
        assert!("Queued".parse::<TaskState>().is_err());
    }

    #[test]
    fn batch_states_round_trip_and_are_the_schemas() {
        for s in BatchState::ALL {
            assert_eq!(s.as_str().parse::<BatchState>().unwrap(), *s);
            assert_eq!(s.to_string(), s.as_str());
        }
        let ours: BTreeSet<String> = BatchState::ALL.iter().map(|s| s.as_str().to_string()).collect();
        assert_eq!(ours.len(), BatchState::ALL.len());
        assert_eq!(ours, checked_states("runware_fleet_batches"));
        let e = "queued".parse::<BatchState>().unwrap_err();
        assert_eq!(e.to_string(), "unknown batch state \"queued\"");
    }

    #[test]
    fn states_go_to_and_from_text_columns() {
        let mut buf = BytesMut::new();
        assert!(<TaskState as ToSql>::accepts(&Type::TEXT));
        assert!(!<TaskState as ToSql>::accepts(&Type::INT4));
        TaskState::Parked.to_sql_checked(&Type::TEXT, &mut buf).unwrap();
        assert_eq!(&buf[..], b"parked");
        assert_eq!(TaskState::from_sql(&Type::TEXT, b"parked").unwrap(), TaskState::Parked);
        assert!(TaskState::from_sql(&Type::TEXT, b"parkd").is_err());
        assert_eq!(BatchState::from_sql(&Type::TEXT, b"cancelled").unwrap(), BatchState::Cancelled);
        assert!(TaskState::Done.to_sql_checked(&Type::INT4, &mut buf).is_err());
    }
}
