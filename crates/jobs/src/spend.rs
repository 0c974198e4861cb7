//! The spend cap: a runner never submits an attempt whose estimate would take what
//! is billed plus what is in flight over the cap.
//!
//! Billed is what the journal says earlier runs spent plus every image this run
//! received (its reported cost, or its price when the server did not say). In
//! flight is the estimate of every attempt sent and not yet ended. An attempt's
//! images count in both until it ends, so the check errs on the side of the cap.

use std::sync::Mutex;

/// Micro-dollars, so that sums are exact.
fn micros(usd: f64) -> u64 {
    (usd.max(0.0) * 1e6).round() as u64
}

#[derive(Debug, Default)]
struct Spend {
    billed: u64,
    in_flight: u64,
}

/// The cap, and what counts against it.
#[derive(Debug)]
pub struct Budget {
    cap: Option<u64>,
    spend: Mutex<Spend>,
}

/// Why an attempt may not be sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Its estimate would go over the cap.
    #[error(
        "${billed:.2} billed + ${in_flight:.2} in flight + ${estimate:.2} for this attempt would pass the cap of ${cap:.2}"
    )]
    OverCap {
        /// Billed so far, USD.
        billed: f64,
        /// Reserved by attempts in flight, USD.
        in_flight: f64,
        /// The attempt's estimate, USD.
        estimate: f64,
        /// The cap, USD.
        cap: f64,
    },
    /// Its model has no known price, so the cap cannot bound it.
    #[error("the model's price is unknown, so the cap cannot bound it")]
    Unpriced,
}

/// An attempt's share of the in-flight spend, given back when it ends.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a Budget,
    amount: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut s = self.budget.spend.lock().unwrap_or_else(|p| p.into_inner());
        s.in_flight = s.in_flight.saturating_sub(self.amount);
    }
}

impl Budget {
    /// A budget of `cap` USD (none: no cap), with `already` USD billed by earlier runs.
    pub fn new(cap: Option<f64>, already: f64) -> Budget {
        Budget { cap: cap.map(micros), spend: Mutex::new(Spend { billed: micros(already), in_flight: 0 }) }
    }

    fn spend(&self) -> std::sync::MutexGuard<'_, Spend> {
        self.spend.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `estimate` USD for an attempt about to be sent, or says why not.
    pub fn reserve(&self, estimate: Option<f64>) -> Result<Reservation<'_>, Refusal> {
        let Some(cap) = self.cap else {
            return Ok(Reservation { budget: self, amount: estimate.map(micros).unwrap_or(0) });
        };
        let Some(estimate) = estimate.map(micros) else { return Err(Refusal::Unpriced) };
        let mut s = self.spend();
        if s.billed + s.in_flight + estimate > cap {
            let usd = |m: u64| m as f64 / 1e6;
            return Err(Refusal::OverCap {
                billed: usd(s.billed),
                in_flight: usd(s.in_flight),
                estimate: usd(estimate),
                cap: usd(cap),
            });
        }
        s.in_flight += estimate;
        Ok(Reservation { budget: self, amount: estimate })
    }

    /// An image arrived, billed `usd`.
    pub fn billed(&self, usd: f64) {
        self.spend().billed += micros(usd);
    }

    /// What attempts in flight have reserved, USD.
    pub fn in_flight_total(&self) -> f64 {
        self.spend().in_flight as f64 / 1e6
    }

    /// What is billed so far (earlier runs included), USD.
    pub fn billed_total(&self) -> f64 {
        self.spend().billed as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_that_would_pass_the_cap_is_refused_until_spend_ends() {
        let b = Budget::new(Some(0.10), 0.02);
        let first = b.reserve(Some(0.04)).expect("0.02 + 0.04 fits");
        let second = b.reserve(Some(0.04)).expect("0.02 + 0.04 + 0.04 fits");
        assert!(matches!(b.reserve(Some(0.04)), Err(Refusal::OverCap { .. })), "0.14 would not");
        // The first attempt's image is billed and the attempt ends.
        b.billed(0.04);
        drop(first);
        assert!(b.reserve(Some(0.04)).is_err(), "0.06 billed + 0.04 in flight + 0.04 > 0.10");
        drop(second);
        assert!(b.reserve(Some(0.04)).is_ok(), "0.06 + 0.04 fits exactly");
        assert!((b.billed_total() - 0.06).abs() < 1e-9);
    }

    #[test]
    fn without_a_cap_everything_goes_and_with_one_unpriced_work_does_not() {
        assert!(Budget::new(None, 0.0).reserve(None).is_ok());
        assert_eq!(Budget::new(Some(1.0), 0.0).reserve(None).err(), Some(Refusal::Unpriced));
    }
}
