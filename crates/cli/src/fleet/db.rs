//! One connection to the queue database, re-made when it breaks; migrations.
//!
//! The connection is shared as an `Arc` taken out of a short-held mutex (never
//! held across an `.await`); tokio-postgres pipelines concurrent statements on it.
//! The worker's hot statements are prepared once per connection ([`Conn::exec`],
//! [`Conn::rows`]): a statement given as text is parsed on every call, a round trip
//! (and an implicit transaction) of its own.

use super::FleetError;
use super::queue::migration_sql as sql;
use super::schema::{MIGRATION_LOCK, MIGRATIONS};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

/// A live connection and the statements prepared on it.
pub struct Conn {
    client: Client,
    /// By the address and length of the statement's text (a `&'static str`).
    prepared: Mutex<HashMap<(usize, usize), Statement>>,
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Conn {
    /// `sql`, prepared on this connection the first time it is asked for.
    pub async fn prepared(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        let key = (sql.as_ptr() as usize, sql.len());
        if let Some(s) = lock(&self.prepared).get(&key) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        lock(&self.prepared).insert(key, s.clone());
        Ok(s)
    }

    /// Executes `sql` as a prepared statement; the rows it changed.
    pub async fn exec(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, tokio_postgres::Error> {
        let s = self.prepared(sql).await?;
        self.client.execute(&s, params).await
    }

    /// Queries with `sql` as a prepared statement.
    pub async fn rows(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let s = self.prepared(sql).await?;
        self.client.query(&s, params).await
    }
}

/// The queue database.
pub struct Db {
    config: tokio_postgres::Config,
    /// `None` for `sslmode=disable`.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    current: Mutex<Option<Arc<Conn>>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password.
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    /// Connects (once) and brings the schema up to date.
    pub async fn open(queue: &str) -> Result<Db, FleetError> {
        let (rest, tls) = super::tls::split(queue)?;
        let mut config: tokio_postgres::Config = rest.parse().map_err(FleetError::BadUrl)?;
        config.ssl_mode(tls.ssl_mode());
        let tls = tls.connector()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("runware");
        let db = Db { config, tls, current: Mutex::new(None) };
        db.migrate().await?;
        Ok(db)
    }

    /// The live connection, connecting if there is none.
    pub async fn client(&self) -> Result<Arc<Conn>, FleetError> {
        if let Some(c) = lock(&self.current).as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let client = Arc::new(Conn { client: self.connect().await?, prepared: Mutex::new(HashMap::new()) });
        *lock(&self.current) = Some(client.clone());
        Ok(client)
    }

    async fn connect(&self) -> Result<Client, FleetError> {
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await.map_err(FleetError::Connect)?;
                tokio::spawn(drive(connection));
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(FleetError::Connect)?;
                tokio::spawn(drive(connection));
                client
            }
        };
        Ok(client)
    }

    /// Forgets a connection that failed, so the next call makes a new one.
    pub fn reset(&self) {
        lock(&self.current).take();
    }

    /// Runs `op` until it succeeds or fails for a reason other than a lost
    /// connection; waits (up to `patience`) for the database to come back.
    pub async fn retrying<T, F, Fut>(&self, patience: Duration, mut op: F) -> Result<T, FleetError>
    where
        F: FnMut(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, FleetError>>,
    {
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            let result = match self.client().await {
                Ok(c) => op(c).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.is_connection() && started.elapsed() < patience => {
                    tracing::warn!(error = %e, "queue database unavailable; retrying in {wait:?}");
                    self.reset();
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    async fn migrate(&self) -> Result<(), FleetError> {
        // A connection of its own: a transaction needs `&mut`.
        let mut client = self.connect().await?;
        let st = |what| move |source| FleetError::Statement { what, source };
        let tx = client.transaction().await.map_err(st("start the migration"))?;
        tx.execute(sql::LOCK, &[&MIGRATION_LOCK]).await.map_err(st("lock the schema"))?;
        tx.batch_execute(sql::CREATE_VERSIONS).await.map_err(st("create the schema table"))?;
        let row = tx.query_one(sql::READ_VERSION, &[]).await.map_err(st("read the schema version"))?;
        let found: i32 = row.get(0);
        let known = MIGRATIONS.len() as i32;
        if found > known {
            return Err(FleetError::SchemaTooNew { found, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql).await.map_err(st("apply a migration"))?;
            tx.execute(sql::RECORD_VERSION, &[&(i as i32 + 1)]).await.map_err(st("record a migration"))?;
            tracing::info!(version = i + 1, "fleet schema migrated");
        }
        tx.commit().await.map_err(st("commit the migration"))?;
        Ok(())
    }
}

/// A `map_err` for a statement.
pub fn stmt(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> FleetError {
    move |source| FleetError::Statement { what, source }
}

/// Runs a connection until it ends.
async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "queue database connection ended");
    }
}

/// A poisoned lock still holds usable data (a connection, prepared statements).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
