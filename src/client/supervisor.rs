//! The supervisor: owns the connection's life. Connects and authenticates (with
//! the last session), runs the connection, and on any drop reconnects with
//! backoff and jitter, within a budget per outage. An authentication refusal is
//! final: every waiting caller gets it at once, and nothing retries.

use super::connection::{ConnectError, Connector, establish};
use super::driver::{self, Ended, Queues};
use super::error::{Cause, ClientError};
use super::metrics::Counters;
use super::shared::Shared;
use super::state::ConnectionState;
use crate::sync::lock;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub(crate) async fn run<C: Connector>(shared: Arc<Shared>, mut queues: Queues, connector: C) {
    let mut attempt: u32 = 0;
    let mut last_error = String::new();
    let mut last_cause: Option<Cause> = None;
    let mut ever_connected = false;
    loop {
        if shared.is_shutdown() {
            return finish(&shared, ClientError::Closed);
        }
        if attempt > 0 {
            if !shared.config.reconnect.allows(attempt) {
                tracing::warn!(attempts = attempt - 1, error = %last_error, "giving up on this outage");
                shared.fail_all(&ClientError::Unreachable {
                    attempts: attempt - 1,
                    last_error: last_error.clone(),
                    cause: last_cause.clone(),
                });
                shared.set_state(ConnectionState::Disconnected { last_error: last_error.clone() });
                // Idle until there is work again (or shutdown).
                while shared.tasks.pending.is_empty() && !shared.is_shutdown() {
                    shared.link.supervisor_wake.notified().await;
                }
                attempt = 1;
                continue;
            }
            let delay = shared.config.reconnect.delay(attempt, fastrand::f64());
            shared.set_state(if ever_connected {
                ConnectionState::Reconnecting { attempt, last_error: last_error.clone(), retry_in: delay }
            } else {
                ConnectionState::Connecting
            });
            {
                tracing::debug!(attempt, ?delay, "reconnect backoff");
                {
                    let mut d = lock(&shared.link.reconnect_delays);
                    if d.len() == 256 {
                        d.pop_front();
                    }
                    d.push_back(delay);
                }
                let stop = shared.life.shutdown_notify.notified();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop => {}
                }
                if shared.is_shutdown() {
                    return finish(&shared, ClientError::Closed);
                }
            }
        }
        match establish(&shared, &connector).await {
            Ok(est) => {
                let generation = shared.link.generation.fetch_add(1, Ordering::AcqRel) + 1;
                Counters::add(&shared.counters.connections, 1);
                if ever_connected {
                    Counters::add(&shared.counters.reconnects, 1);
                    super::telemetry::count(super::telemetry::Event::Reconnect, 1);
                }
                if est.resumed {
                    Counters::add(&shared.counters.sessions_resumed, 1);
                }
                ever_connected = true;
                *lock(&shared.link.timings) = Some(est.timings);
                tracing::info!(generation, resumed = est.resumed, "connected");
                shared.link.connected.store(true, Ordering::Release);
                shared.set_state(ConnectionState::Connected { session: est.session.clone() });
                shared.polls.wake.notify_one();
                let ended = driver::run(&shared, est.ws, generation, est.resumed, &mut queues).await;
                shared.link.connected.store(false, Ordering::Release);
                match ended {
                    Ended::Shutdown => return finish(&shared, ClientError::Closed),
                    Ended::Auth(e) => return finish(&shared, ClientError::Auth(Box::new(e))),
                    other => {
                        tracing::info!(reason = %other, "connection lost");
                        last_error = other.to_string();
                        last_cause = None;
                        attempt = 1;
                        shared.set_state(ConnectionState::Reconnecting {
                            attempt,
                            last_error: last_error.clone(),
                            retry_in: std::time::Duration::ZERO,
                        });
                    }
                }
            }
            Err(ConnectError::Auth(e)) => {
                tracing::warn!(error = %e, "authentication refused; not retrying");
                return finish(&shared, ClientError::Auth(e));
            }
            Err(ConnectError::Config(e)) => return finish(&shared, ClientError::Config(e)),
            Err(ConnectError::Transport { message, cause }) => {
                tracing::debug!(attempt, error = %message, "connection attempt failed");
                last_error = message;
                *lock(&shared.link.last_error) = cause.clone();
                last_cause = cause;
                attempt += 1;
            }
        }
    }
}

/// Ends the client for good: records the terminal error, fails every waiting task.
fn finish(shared: &Shared, err: ClientError) {
    shared.set_terminal(err.clone());
    shared.set_state(ConnectionState::Closed);
    shared.fail_all(&err);
    shared.request_shutdown();
}
