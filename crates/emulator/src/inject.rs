//! Applying a [`Fault`] to the running emulator: faults that act on the open
//! connections now go to them through the registry; the others are armed in the
//! fault state (`FaultState::arm`) and fire later.

use super::faults::Fault;
use super::link::Control;
use super::state::Shared;
use super::stats;
use serde_json::json;

/// Applies `fault` now (or arms it).
pub(crate) fn inject(shared: &Shared, fault: Fault) {
    stats::bump(&shared.stats.faults_injected);
    tracing::info!(?fault, "injecting fault");
    match fault {
        Fault::Drop => shared.conns.control_all(Control::Drop),
        Fault::Close => shared.conns.control_all(Control::Close),
        Fault::HalfOpen => shared.conns.control_all(Control::HalfOpen),
        Fault::Restart => {
            shared.conns.control_all(Control::Drop);
            shared.sessions.clear();
        }
        Fault::StrayError => shared.conns.each(|c| {
            let stray = shared.new_uuid();
            c.push_text(
                json!({"errors":[{
                    "code":"internalServerError",
                    "message":"Stray error for a task this connection never sent (fault injection)",
                    "taskType":"imageInference",
                    "taskUUID": stray,
                }]})
                .to_string(),
            );
            c.push_text(
                json!({"errors":[{
                    "code":"internalServerError",
                    "message":"Stray error with no task (fault injection)",
                }]})
                .to_string(),
            );
        }),
        Fault::Garbage => shared.conns.each(|c| {
            c.push_text("this is not JSON {".to_string());
            c.push_text("[1,2,3]".to_string());
            c.push_text(r#"{"data":5}"#.to_string());
            c.push_text(r#"{"data":[{"taskType":"imageInference","imageUUID":"not-a-task"}]}"#.to_string());
            c.push_binary(vec![0xde, 0xad, 0xbe, 0xef]);
        }),
        Fault::ForgetUploads => shared.media.clear_uploads(),
        outage @ Fault::Outage(_) => {
            // The deadline first, so no client reconnects between the drop and it.
            shared.faults.arm(outage);
            shared.conns.control_all(Control::Drop);
        }
        armed => shared.faults.arm(armed),
    }
}
