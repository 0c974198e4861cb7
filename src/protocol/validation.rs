//! Client-side validation errors: each [`Violation`] names the parameter, the rule
//! and the value given; a [`ValidationError`] carries every violation of a request.

use std::fmt;

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The wire name of the parameter, with a path for nested ones
    /// (`providerSettings.bfl.safetyTolerance`, `inputs.referenceImages[1]`).
    pub parameter: String,
    /// The rule, in words (`must be between 20 and 99`).
    pub rule: String,
    /// The value that was given, shortened when long.
    pub value: String,
}

impl Violation {
    /// A violation of `rule` by `value` for `parameter`.
    pub fn new(parameter: impl Into<String>, rule: impl Into<String>, value: impl fmt::Display) -> Self {
        Violation { parameter: parameter.into(), rule: rule.into(), value: shorten(&value.to_string()) }
    }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}… ({} characters)", s.chars().count())
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (got {})", self.parameter, self.rule, self.value)
    }
}

/// Every rule a request breaks, reported together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// The violations, in parameter order; never empty.
    pub violations: Vec<Violation>,
}

impl ValidationError {
    /// True if some violation names `parameter`.
    pub fn names(&self, parameter: &str) -> bool {
        self.violations.iter().any(|v| v.parameter == parameter)
    }

    /// The parameters named, in order.
    pub fn parameters(&self) -> Vec<&str> {
        self.violations.iter().map(|v| v.parameter.as_str()).collect()
    }

    pub(crate) fn from_violations(violations: Vec<Violation>) -> Result<(), ValidationError> {
        if violations.is_empty() { Ok(()) } else { Err(ValidationError { violations }) }
    }
}

impl From<Violation> for ValidationError {
    fn from(v: Violation) -> Self {
        ValidationError { violations: vec![v] }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.violations.as_slice() {
            [one] => write!(f, "invalid request: {one}"),
            many => {
                write!(f, "invalid request ({} problems): ", many.len())?;
                for (i, v) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{v}")?;
                }
                Ok(())
            }
        }
    }
}
